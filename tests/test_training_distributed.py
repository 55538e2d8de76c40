"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global batch: each takes
half of every global batch, and the loss gathers the documents of both into one set of negatives."""
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


def torchrun_train(stage: str, settings: dict, processes: int = 2) -> None:
    overrides = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
         "-m", "l2v_cli.train", stage, sample_path(f"{stage}.json"), *overrides],
        capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]


COMMON = dict(max_length=64, save_steps=0, lora_dropout=0.0, warmup_steps=0, learning_rate=1e-3, merge_output=False,
              progress_bar=False, global_batch_size=8, max_steps=3, dtype="float32",
              bf16=False)  # fp32 in every process, whatever the processor: compared at fp32 tolerances


@pytest.mark.parametrize("extra", [{}, {"gradcache_chunk_size": 3}], ids=["one-pass", "gradcache"])
def test_two_processes_match_one_with_the_same_global_batch(tiny_llama, tmp_path, extra):
    common = dict(base_model=str(tiny_llama), **COMMON, **extra)
    one, two = tmp_path / "one", tmp_path / "two"
    train("supervised", load_config("supervised", sample_path("supervised.json"), {**common, "output_dir": str(one)}))
    torchrun_train("supervised", {**common, "output_dir": two})
    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    # Each query saw all 8 positives and 8 hard negatives: without the gather the loss would be far lower.
    pd.testing.assert_series_equal(m1.loss, m2.loss, rtol=1e-4)
    a, b = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (one, two))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 1e-4  # the weights moved
