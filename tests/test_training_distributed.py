"""Two processes (torchrun, gloo on CPU) train exactly like one process with the same global batch:
documents of both processes are gathered, with gradients, into one set of negatives. The same holds
with GradCache, and a two-process run resumes on one process."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from l2v_core.training import ConfigError, load_config, sample_path, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def torchrun_train(stage: str, settings: dict, processes: int = 2) -> None:
    overrides = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
         "-m", "l2v_cli.train", stage, sample_path(f"{stage}.json"), *overrides],
        capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def assert_same_run(one: Path, two: Path) -> None:
    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    pd.testing.assert_series_equal(m1.loss, m2.loss, rtol=1e-4)  # each query saw all 8 positives + 8 negatives
    assert (m1.tokens == m2.tokens).all()  # tokens are counted over both processes
    a, b = load_file(one / "adapter" / "adapter_model.safetensors"), load_file(two / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


COMMON = dict(max_length=64, save_steps=0, lora_dropout=0.0, warmup_steps=0, learning_rate=1e-3, merge_output=False,
              progress_bar=False)


def test_two_processes_match_one_with_the_same_global_batch(tiny_llama, tmp_path):
    """Evaluation during training runs on the main process while the other waits, and changes nothing."""
    common = dict(base_model=str(tiny_llama), max_steps=3, eval_tasks="L2VMiniSTS", eval_steps=2, **COMMON)
    one = tmp_path / "one"
    train("supervised", load_config("supervised", sample_path("supervised.json"),
                                    {**common, "output_dir": str(one), "batch_size": 8}))

    two = tmp_path / "two"
    torchrun_train("supervised", {**common, "output_dir": two, "batch_size": 4})
    assert sorted(p.name for p in (two / "checkpoints" / "step-000003").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]
    assert_same_run(one, two)
    m1, m2 = pd.read_csv(one / "metrics.csv"), pd.read_csv(two / "metrics.csv")
    assert m2.dropna(subset=["eval_L2VMiniSTS"]).step.tolist() == [2, 3]
    pd.testing.assert_series_equal(m1.eval_L2VMiniSTS, m2.eval_L2VMiniSTS, atol=1e-3)


def test_two_processes_with_gradcache_match_one_and_resume_on_one(tiny_llama, tmp_path):
    """2 processes x 4 triples (12 texts each, GradCache chunks of 5: 5+5+2, DDP no_sync for the first
    two) equal one process with the full batch of 8 in one pass; the 2-process checkpoint then
    resumes on one process (with the same global batch) and ends where the 1-process run ends."""
    common = dict(base_model=str(tiny_llama), max_steps=2, **COMMON)

    def one_process(out, steps, **extra):
        return train("supervised", load_config("supervised", sample_path("supervised.json"),
                                               {**common, "output_dir": str(out), "max_steps": steps, **extra}))

    one = tmp_path / "one"
    one_process(one, 2, batch_size=8)
    two = tmp_path / "two"
    torchrun_train("supervised", {**common, "output_dir": two, "batch_size": 4, "gradcache_chunk_size": 5,
                                  "save_steps": 2})
    assert_same_run(one, two)

    # Resuming on one process with batch_size 4 would halve the global batch (and change the data order).
    with pytest.raises(ConfigError, match=r"global batch was 8 \(2 process\(es\)\).*set global_batch_size 8"):
        one_process(two, 4, batch_size=4, gradcache_chunk_size=5)
    resumed = one_process(two, 4, batch_size=4, global_batch_size=8, gradcache_chunk_size=5)
    assert resumed.resumed_from == 2
    one_process(one, 4, batch_size=8)  # the 1-process run, continued to the same step
    assert_same_run(one, two)
