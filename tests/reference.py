"""The reference llm2vec, run in its own environment (transformers 4.44), for the tests that compare vectors.

Set L2V_REFERENCE_PYTHON to a Python that has ``llm2vec==0.2.3`` and ``transformers==4.44.2``
(.ci/run builds one; ``BUILD_REFERENCE`` is the same in one command); without it those tests are skipped.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE_PYTHON = os.environ.get("L2V_REFERENCE_PYTHON")
RUNNER = Path(__file__).with_name("reference_runner.py")
# The reference environment as .ci/run builds it, in one command.
BUILD_REFERENCE = ("python3 -m venv .ci-ref-venv && .ci-ref-venv/bin/pip install torch==2.13.0 && .ci-ref-venv/bin/pip install "
                   "transformers==4.44.2 peft==0.12.0 numpy tqdm safetensors && .ci-ref-venv/bin/pip install --no-deps "
                   "llm2vec==0.2.3 && export L2V_REFERENCE_PYTHON=$PWD/.ci-ref-venv/bin/python")
needs_reference = pytest.mark.skipif(not REFERENCE_PYTHON, reason="L2V_REFERENCE_PYTHON (a Python with the reference "
                                                                  f"llm2vec) is not set; build one with: {BUILD_REFERENCE}")


def run_reference(tmp_path, model_dir, pooling, sentences, peft=None):
    inputs, out = tmp_path / "inputs.json", tmp_path / f"ref-{pooling}.npy"
    inputs.write_text(json.dumps(sentences))
    cmd = [REFERENCE_PYTHON, str(RUNNER), str(model_dir), str(inputs), str(out), pooling] + ([str(peft)] if peft else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.from_numpy(np.load(out))


def make_reference_adapter(base, out, seed) -> None:
    """A LoRA adapter of the reference's bidirectional Llama over ``base``, as its training writes one."""
    done = subprocess.run([REFERENCE_PYTHON, str(RUNNER), "make-adapter", str(base), str(out), str(seed)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-4000:]


def assert_close_to_reference(ours, ref):
    cos = torch.nn.functional.cosine_similarity(ours, ref)
    assert cos.min() >= 0.9999, cos
