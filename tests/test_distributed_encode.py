"""Sharded encoding under torchrun with 2 gloo processes equals single-process encoding."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2v_core import LLM2Vec
from l2v_core.distributed import shard_by_tokens

ROOT = Path(__file__).resolve().parents[1]


def test_shards_balance_tokens_and_cover_everything():
    lengths = [100, 3, 3, 3, 3, 50, 49, 2]
    shards = shard_by_tokens(lengths, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= 10  # 213 tokens split 106 / 107, not 4 texts each
    assert shard_by_tokens([5], 3)[1:] == [[], []]  # ranks without texts get empty shards


@pytest.mark.parametrize("n", [7, 1])  # odd count, and fewer texts than ranks (one rank idles)
def test_torchrun_two_processes_match_single_process(tiny_llama, tmp_path, n):
    out = tmp_path / "out.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + n),
           str(ROOT / "tests" / "dist" / "encode_worker.py"), str(tiny_llama), str(out), str(n)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = torch.load(out)
    single = LLM2Vec.from_pretrained(tiny_llama, dtype="float32").encode(result["texts"], batch_size=3, show_progress_bar=False)
    assert torch.allclose(result["vectors"], single, atol=1e-5)


def test_l2v_eval_under_torchrun_matches_one_process(tiny_llama, tmp_path):
    """Two gloo ranks share the encoding of each task; the table rank 0 writes equals a
    one-process run's."""
    import pandas as pd

    def run(cmd_prefix, out):
        cmd = [*cmd_prefix, "-m", "l2v_cli.eval", "--model", str(tiny_llama), "--tasks", "L2VMiniSTS,L2VMiniRetrieval",
               "--output", str(out), "--no-progress", "--batch-size", "4",
               "--dtype", "float32"]  # sharded and whole runs compared at fp32 tolerance, on any processor
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        return pd.read_parquet(out / "scores.parquet")

    single = run([sys.executable], tmp_path / "one")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29611"]
    # --no-python: torchrun starts `python -m l2v_cli.eval ...` on each rank as given
    sharded = run([*launcher, "--no-python", sys.executable], tmp_path / "two")
    key = ["task", "split", "subset", "metric"]
    merged = single.merge(sharded, on=key, suffixes=("_one", "_two"))
    assert len(merged) == len(single) == len(sharded)
    assert (merged["value_one"] - merged["value_two"]).abs().max() < 1e-4
    assert not list((tmp_path / "two").glob("**/*.tmp"))
