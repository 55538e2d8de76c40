"""The benchmark scripts run end to end and end with the one JSON line every check reads (figures unchecked)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENCODE_KEYS = {"shape", "device", "dtype", "attn", "texts", "tokens", "padded_tok_s", "packed_tok_s", "naive_tok_s",
               "dense_ceiling_tok_s", "packed_vs_padded", "fraction_of_ceiling", "peak_mem_gib", "mfu"}
TRAIN_KEYS = {"stage", "shape", "device", "tokens_per_s", "step_s", "peak_mem_gib"}


def _last_json_line(script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert isinstance(result, dict)
    return result


def test_encode_benchmark_ends_with_its_json_line():
    result = _last_json_line("encode.py", "--shape", "tiny", "--texts", "24", "--repeats", "1", "--naive-texts", "8",
                             "--batch-size", "8", "--dtype", "float32")
    assert set(result) == ENCODE_KEYS
    assert (result["shape"], result["device"], result["dtype"], result["attn"], result["texts"]) == \
        ("tiny", "cpu", "float32", "sdpa", 24)
    assert result["tokens"] > 24 and result["padded_tok_s"] > 0 and result["dense_ceiling_tok_s"] > 0
    assert result["packed_tok_s"] is None and result["packed_vs_padded"] is None and result["mfu"] is None
    assert result["fraction_of_ceiling"] == pytest.approx(result["padded_tok_s"] / result["dense_ceiling_tok_s"],
                                                          rel=1e-3)


def test_encode_benchmark_takes_the_old_shape_names():
    spec = importlib.util.spec_from_file_location("encode_benchmark", ROOT / "benchmarks" / "encode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse(["--shape", "sheared-1.3b", "--device", "cpu"]).shape == "llama1b"
    assert module.parse(["--shape", "mistral-7b", "--device", "cpu"]).shape == "mistral7b"


def test_encode_benchmark_records_the_dtype_auto_resolved_to(monkeypatch):
    from l2v_core import dtypes

    spec = importlib.util.spec_from_file_location("encode_benchmark", ROOT / "benchmarks" / "encode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for units, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(dtypes, "torch_cpu_bf16_check", lambda units=units: units)
        dtypes.cpu_has_bf16.cache_clear()
        assert module.parse(["--device", "cpu"]).dtype == expected  # auto is the default
        assert module.parse(["--device", "cpu", "--dtype", "float32"]).dtype == "float32"
    dtypes.cpu_has_bf16.cache_clear()


def test_train_benchmark_ends_with_its_json_line():
    result = _last_json_line("train.py", "--stage", "simcse", "--shape", "tiny", "--steps", "1", "--batch-size", "2",
                             "--max-length", "32")
    assert set(result) == TRAIN_KEYS
    assert (result["stage"], result["shape"], result["device"]) == ("simcse", "tiny", "cpu")
    assert result["tokens_per_s"] > 0 and result["step_s"] > 0 and result["peak_mem_gib"] > 0
