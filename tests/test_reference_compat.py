"""Vectors match the reference llm2vec (run in its own environment on transformers 4.44).

Set L2V_REFERENCE_PYTHON to a Python that has ``llm2vec==0.2.3`` and ``transformers==4.44.2``
(.ci/run builds one; ``BUILD_REFERENCE`` below is the same in one command); without it these
tests are skipped.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from l2v_core import LLM2Vec, POOLING_MODES
from tests import tiny

REFERENCE_PYTHON = os.environ.get("L2V_REFERENCE_PYTHON")
RUNNER = Path(__file__).with_name("reference_runner.py")
# The reference environment as .ci/run builds it, in one command.
BUILD_REFERENCE = ("python3 -m venv .ci-ref-venv && .ci-ref-venv/bin/pip install torch==2.13.0 && .ci-ref-venv/bin/pip install "
                   "transformers==4.44.2 peft==0.12.0 numpy tqdm safetensors && .ci-ref-venv/bin/pip install --no-deps "
                   "llm2vec==0.2.3 && export L2V_REFERENCE_PYTHON=$PWD/.ci-ref-venv/bin/python")
pytestmark = pytest.mark.skipif(not REFERENCE_PYTHON, reason="L2V_REFERENCE_PYTHON (a Python with the reference llm2vec) "
                                                             f"is not set; build one with: {BUILD_REFERENCE}")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    ["Retrieve passages that answer the question:", "Paris is the capital and most populous city of France."],
    "Cats and dogs.",
    ["  Given a claim, find documents that refute the claim ", "The stock market fell sharply after the announcement.  "],
    "Two women are walking along the beach at sunset, and a man is playing a guitar on the street.",
    ["Represent this sentence for searching relevant passages:", "Machine learning models turn text into vectors."],
]


def run_reference(tmp_path, model_dir, pooling, sentences, peft=None):
    inputs, out = tmp_path / "inputs.json", tmp_path / f"ref-{pooling}.npy"
    inputs.write_text(json.dumps(sentences))
    cmd = [REFERENCE_PYTHON, str(RUNNER), str(model_dir), str(inputs), str(out), pooling] + ([str(peft)] if peft else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.from_numpy(np.load(out))


def assert_close_to_reference(ours, ref):
    cos = torch.nn.functional.cosine_similarity(ours, ref)
    assert cos.min() >= 0.9999, cos


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
        done = subprocess.run([REFERENCE_PYTHON, str(RUNNER), "make-adapter", str(base), str(out), str(seed)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
        assert done.returncode == 0, done.stderr[-4000:]
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
