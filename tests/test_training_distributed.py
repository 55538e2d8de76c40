"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global batch:
documents of both processes are gathered, with gradients, into one set of negatives."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from l2v_core.training import load_config, sample_path, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def test_two_processes_match_one_with_the_same_global_batch(tiny_llama, tmp_path):
    common = dict(base_model=str(tiny_llama), max_steps=3, max_length=24, save_steps=0, lora_dropout=0.0,
                  warmup_steps=0, learning_rate=1e-3, merge_output=False, progress_bar=False)
    one = tmp_path / "one"
    train("supervised", load_config("supervised", sample_path("supervised.json"),
                                    {**common, "output_dir": str(one), "batch_size": 8}))

    two = tmp_path / "two"
    overrides = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in common.items()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "l2v_core.cli.train", "supervised", sample_path("supervised.json"), *overrides,
         "--output_dir", str(two), "--batch_size", "4"],
        capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (two / "checkpoints" / "step-000003").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]

    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    pd.testing.assert_series_equal(m1.loss, m2.loss, rtol=1e-4)  # each query saw all 8 positives + 8 negatives
    assert (m1.tokens == m2.tokens).all()  # tokens are counted over both processes
    a, b = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
