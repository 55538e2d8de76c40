"""Vectors match the reference llm2vec (run in its own environment on transformers 4.44; see
``tests/reference.py`` for how to point the tests at one; without it these tests are skipped)."""
import json
import shutil

import pytest
import torch

from l2v_core import LLM2Vec, POOLING_MODES
from tests import tiny
from tests.reference import assert_close_to_reference, make_reference_adapter, needs_reference, run_reference

pytestmark = needs_reference

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    ["Retrieve passages that answer the question:", "Paris is the capital and most populous city of France."],
    "Cats and dogs.",
    ["  Given a claim, find documents that refute the claim ", "The stock market fell sharply after the announcement.  "],
    "Two women are walking along the beach at sunset, and a man is playing a guitar on the street.",
    ["Represent this sentence for searching relevant passages:", "Machine learning models turn text into vectors."],
]


@pytest.mark.parametrize("pooling", POOLING_MODES)
@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_same_vectors_as_reference(model_root, tmp_path, arch, pooling):
    model_dir = tiny.make_model_dir(model_root, arch)
    ref = run_reference(tmp_path, model_dir, pooling, SENTENCES)
    ours = LLM2Vec.from_pretrained(model_dir, pooling_mode=pooling).encode(SENTENCES, show_progress_bar=False)
    assert_close_to_reference(ours, ref)


def test_reference_checkpoint_layout_loads_with_same_vectors(model_root, tmp_path):
    """Base weights, an MNTP adapter dir (adapter + config + tokenizer, no weights) merged on load,
    then a SimCSE adapter with llm2vec_config.json — both adapters written by the reference's stack."""
    base = tiny.make_model_dir(model_root, "llama")
    mntp, simcse = tmp_path / "mntp", tmp_path / "simcse"
    for out, seed in ((mntp, 1), (simcse, 2)):
        make_reference_adapter(base, out, seed)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, mntp / name)
    (simcse / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "weighted_mean", "max_length": 512,
                                                            "doc_max_length": 400, "skip_instruction": True}))
    ref = run_reference(tmp_path, mntp, "weighted_mean", SENTENCES, peft=simcse)
    enc = LLM2Vec.from_pretrained(mntp, peft_model_name_or_path=simcse)
    assert enc.pooling_mode == "weighted_mean"
    ours = enc.encode(SENTENCES, show_progress_bar=False)
    assert_close_to_reference(ours, ref)
    plain = LLM2Vec.from_pretrained(base, pooling_mode="weighted_mean").encode(SENTENCES, show_progress_bar=False)
    assert torch.nn.functional.cosine_similarity(plain, ours).min() < 0.999  # the adapters really did something
