"""SentenceTransformer(path) on a saved l2v directory gives LLM2Vec's vectors."""
import pytest
import torch
from sentence_transformers import SentenceTransformer

from l2v_core import LLM2Vec

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Cats and dogs.",
         "Paris is the capital and most populous city of France."]
QUERY = "Retrieve passages that answer the question:"


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("st") / "model"
    enc = LLM2Vec.from_pretrained(tiny_llama, pooling_mode="weighted_mean")
    enc.save(out, prompts={"query": QUERY})
    return out, enc


def test_sentence_transformer_loads_and_matches(saved):
    path, enc = saved
    st = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    assert st.get_embedding_dimension() == enc.hidden_size
    ours = enc.encode(TEXTS, show_progress_bar=False)
    theirs = st.encode(TEXTS, convert_to_tensor=True, batch_size=2)
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)


def test_prompts_are_instructions_excluded_from_pooling(saved):
    path, enc = saved
    st = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    assert st.prompts["query"] == QUERY
    theirs = st.encode(TEXTS, prompt_name="query", convert_to_tensor=True)
    ours = enc.encode([[QUERY, t] for t in TEXTS], show_progress_bar=False)
    assert torch.allclose(ours, theirs.cpu(), atol=1e-5)
    assert not torch.allclose(theirs, st.encode(TEXTS, convert_to_tensor=True), atol=1e-4)


def test_resaving_through_sentence_transformers_keeps_loading(saved, tmp_path):
    path, enc = saved
    st = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    st.save(str(tmp_path / "again"))
    again = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    assert torch.allclose(again.encode(TEXTS, convert_to_tensor=True), st.encode(TEXTS, convert_to_tensor=True), atol=1e-6)
