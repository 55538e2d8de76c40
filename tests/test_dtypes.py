"""dtype ``auto``: decided by the processor's bf16 units at run time, recorded as the dtype it resolved to."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from l2v_core import LLM2Vec, dtypes
from l2v_core.loading import normalize_model_kwargs


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what torch's capability check answers (True, False, or None: it cannot tell); the cache is cleared."""
    def answer(value):
        monkeypatch.setattr(dtypes, "torch_cpu_bf16_check", lambda: value)
        dtypes.cpu_has_bf16.cache_clear()
    yield answer
    dtypes.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("units, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_follows_the_cpu_capability_check(cpu_bf16, units, expected):
    cpu_bf16(units)
    assert dtypes.resolve_dtype("auto", "cpu") == expected
    assert dtypes.resolve_dtype(None, "cpu") == expected
    # from_pretrained's default (no dtype given) and the reference's torch_dtype="auto" both mean l2v's auto
    assert normalize_model_kwargs({"device_map": "cpu"})["dtype"] == expected
    assert normalize_model_kwargs({"torch_dtype": "auto", "device_map": "cpu"})["dtype"] == expected
    # forcing wins either way
    assert normalize_model_kwargs({"dtype": "float32", "device_map": "cpu"})["dtype"] == torch.float32
    assert normalize_model_kwargs({"torch_dtype": torch.bfloat16, "device_map": "cpu"})["dtype"] == torch.bfloat16


@pytest.mark.parametrize("speedup, expected", [(2.0, torch.bfloat16), (1.0, torch.float32)])
def test_micro_benchmark_decides_only_when_the_check_cannot_tell_and_runs_once(cpu_bf16, monkeypatch, speedup,
                                                                                 expected):
    calls = []
    monkeypatch.setattr(dtypes, "bf16_matmul_speedup", lambda: calls.append(1) or speedup)
    cpu_bf16(None)
    assert dtypes.resolve_dtype("auto", "cpu") == expected
    assert dtypes.resolve_dtype("auto", "cpu") == expected
    assert len(calls) == 1  # cached for the process
    cpu_bf16(False)
    assert dtypes.resolve_dtype("auto", "cpu") == torch.float32 and len(calls) == 1  # a clear answer: no timing


def test_micro_benchmark_times_both_dtypes():
    assert dtypes.bf16_matmul_speedup(seconds=0.05, size=64) > 0


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match="'float8'.*auto, float32, bfloat16, float16"):
        normalize_model_kwargs({"dtype": "float8"})


def test_tiny_model_encodes_in_bf16_on_cpu_close_to_fp32(tiny_llama, cpu_bf16):
    texts = ["The quick brown fox jumps over the lazy dog.", ["Retrieve passages:", "Paris is the capital of France."],
             "Cats and dogs are common household pets in many countries."]
    fp32 = LLM2Vec.from_pretrained(tiny_llama, dtype="float32").encode(texts, show_progress_bar=False, device="cpu")
    cpu_bf16(True)
    auto = LLM2Vec.from_pretrained(tiny_llama, device_map="cpu")  # default dtype auto: bf16, as the check says yes
    assert auto.model.dtype == torch.bfloat16
    bf16 = auto.encode(texts, show_progress_bar=False, device="cpu")
    assert bf16.dtype == torch.float32  # vectors come back in fp32 whatever the model runs in
    assert not torch.equal(bf16, fp32)
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() >= 0.999
    cpu_bf16(False)
    assert LLM2Vec.from_pretrained(tiny_llama, device_map="cpu").model.dtype == torch.float32


def _settings(spec):
    from l2v_eval.encoder_adapter import encoder_settings

    return encoder_settings(SimpleNamespace(mteb_model_meta=spec.model_meta(), spec=spec))


def test_cache_key_and_experiment_hold_the_resolved_dtype(tiny_llama, cpu_bf16):
    from l2v_eval.model import ModelSpec

    def spec(**kwargs):
        return ModelSpec(str(tiny_llama), device="cpu", **kwargs)

    cpu_bf16(True)
    auto = spec(dtype="auto")
    assert _settings(auto)["dtype"] == "bfloat16" and auto.experiment_kwargs == {"dtype": "bfloat16"}
    assert _settings(auto) == _settings(spec(dtype="bfloat16")) == _settings(spec())
    assert _settings(auto) != _settings(spec(dtype="float32"))  # an auto bf16 run never reads fp32 vectors
    cpu_bf16(False)
    auto = spec(dtype="auto")
    assert _settings(auto)["dtype"] == "float32" and auto.experiment_kwargs is None
    # fp32 is the reference: auto here, an explicit float32 and older runs are one experiment
    assert _settings(auto) == _settings(spec(dtype="float32")) == _settings(spec())
    assert spec(dtype="auto").experiment == spec(dtype="float32").experiment == ""


def test_results_rows_carry_the_dtype_the_run_used(tiny_llama, cpu_bf16, tmp_path):
    from l2v_eval.harness import EvalConfig, run_evaluation

    cpu_bf16(True)
    summary = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="L2VMiniSTS", output=tmp_path, device="cpu",
                                        show_progress=False, batch_size=16, dtype="auto"))
    rows = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    assert set(rows["status"]) == {"ok"}
    assert "bfloat16" in summary.experiment and set(rows["experiment"]) == {summary.experiment}
    assert "auto" not in summary.experiment


def test_every_cli_offers_the_same_dtype_choices():
    from l2v_cli import convert, eval as eval_cli

    run = eval_cli.build_parser()._subparsers._group_actions[0].choices["run"]
    for parser in (run, convert.build_parser()):
        action = next(a for a in parser._actions if a.dest == "dtype")
        assert tuple(action.choices) == dtypes.DTYPE_NAMES and action.default == "auto"
    assert convert.saved_dtype("auto") == "float32" and convert.saved_dtype("bfloat16") == "bfloat16"
