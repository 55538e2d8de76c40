"""Evaluation during training: scores of the encoder being trained in metrics.csv, and the run report."""
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from l2v_core import LLM2Vec
from l2v_cli import train as cli
from l2v_core.training import ConfigError, load_config, sample_path, train
from l2v_eval.live import evaluate_encoder, load_eval_tasks
from l2v_eval.tasks.mini import MINI_TASK_NAMES
from tests import tiny

SCORES = [f"eval_{name}" for name in MINI_TASK_NAMES]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.txt"
    path.write_text("\n".join(tiny.CORPUS * 6))
    return path


def mntp(model, corpus, out, **extra):
    # LoRA dropout on: a run whose evaluation left the model in eval mode, or moved an RNG, would differ.
    values = dict(base_model=str(model), train_file=str(corpus), output_dir=str(out), max_steps=5, batch_size=4,
                  max_length=64, learning_rate=5e-3, lora_dropout=0.1, save_steps=2, progress_bar=False)
    return train("mntp", load_config("mntp", None, {**values, **extra}))


@pytest.fixture(scope="module")
def evaluated(tiny_llama, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated") / "run"
    return mntp(tiny_llama, corpus, out, eval_tasks="l2v-mini", eval_steps=2)


def test_scores_are_written_at_every_eval_step_and_at_the_end(evaluated):
    metrics = pd.read_csv(evaluated.metrics_file)
    assert list(metrics.columns) == ["step", "loss", "lr", "tokens", "seconds", *SCORES, "eval_mean"]
    assert metrics.step.tolist() == [1, 2, 3, 4, 5]
    scored = metrics.dropna(subset=["eval_mean"])
    assert scored.step.tolist() == [2, 4, 5]
    assert metrics.loc[~metrics.step.isin([2, 4, 5]), [*SCORES, "eval_mean"]].isna().all().all()
    assert scored[SCORES].notna().all().all() and ((scored[SCORES] >= -1) & (scored[SCORES] <= 1)).all().all()
    pd.testing.assert_series_equal(scored[SCORES].mean(axis=1), scored.eval_mean, check_names=False, atol=1e-5)
    last = scored.iloc[-1]
    assert evaluated.eval_scores is not None
    for column, value in evaluated.eval_scores.items():
        assert math.isclose(value, last[column], rel_tol=1e-5, abs_tol=1e-6)


def test_evaluation_leaves_training_untouched(evaluated, tiny_llama, corpus, tmp_path):
    plain = mntp(tiny_llama, corpus, tmp_path / "plain")
    a = load_file(f"{evaluated.adapter_dir}/adapter_model.safetensors")
    b = load_file(f"{plain.adapter_dir}/adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_series_equal(pd.read_csv(evaluated.metrics_file).loss, pd.read_csv(plain.metrics_file).loss)


def test_mntp_scores_are_those_of_the_encoder_the_stage_produces(evaluated):
    """The adapter directory carries llm2vec_config.json and loads as the very encoder that was scored."""
    saved = LLM2Vec.from_pretrained(evaluated.adapter_dir)
    assert saved.pooling_mode == "mean"
    scores = evaluate_encoder(saved, load_eval_tasks("L2VMiniSTS,L2VMiniRetrieval"))
    last = pd.read_csv(evaluated.metrics_file).iloc[-1]
    for name, value in scores.items():
        assert math.isclose(value, last[f"eval_{name}"], rel_tol=1e-4, abs_tol=1e-5), name


def test_simcse_scores_the_encoder_being_trained(tiny_llama, tmp_path):
    out = tmp_path / "simcse"
    result = train("simcse", load_config("simcse", sample_path("simcse.json"), dict(
        base_model=str(tiny_llama), output_dir=str(out), max_steps=2, batch_size=4, max_length=64,
        save_steps=0, progress_bar=False, eval_tasks="L2VMiniSTS")))
    metrics = pd.read_csv(result.metrics_file)
    assert metrics.dropna(subset=["eval_mean"]).step.tolist() == [2]  # eval_steps 0: at the end only
    merged = evaluate_encoder(LLM2Vec.from_pretrained(str(out)), load_eval_tasks("L2VMiniSTS"))
    assert math.isclose(merged["L2VMiniSTS"], metrics.eval_L2VMiniSTS.iloc[-1], rel_tol=1e-4, abs_tol=1e-5)


def test_report_plots_loss_and_scores(evaluated, capsys):
    assert cli.main(["report", evaluated.output_dir]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"report: {evaluated.output_dir}/report.md", f"plot: {evaluated.output_dir}/report.png"]
    with open(f"{evaluated.output_dir}/report.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(f"{evaluated.output_dir}/report.md").read()
    assert "first (step 2) | last (step 5)" in text and "![loss and scores against step](report.png)" in text
    assert all(f"| {name} |" in text for name in MINI_TASK_NAMES) and "| **mean** |" in text


def test_report_of_a_folder_without_metrics_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} has no metrics.csv; give the output_dir of an l2v-train run\n"


def test_bad_eval_tasks_fail_before_the_model_loads(corpus, tmp_path):
    missing_model = tmp_path / "no-such-model"  # never reached: the task spec is checked first
    with pytest.raises(ConfigError, match=r"`eval_tasks` 'l2v-mni'.*did you mean l2v-mini"):
        mntp(missing_model, corpus, tmp_path / "a", eval_tasks="l2v-mni")
    with pytest.raises(ConfigError, match="probe-ner: word-level probes are not evaluated during training"):
        mntp(missing_model, corpus, tmp_path / "b", eval_tasks="L2VMiniSTS,probe-ner")
    with pytest.raises(ConfigError, match="`eval_steps` needs `eval_tasks`"):
        load_config("mntp", None, dict(base_model="m", train_file="t", output_dir=str(tmp_path / "c"), eval_steps=5))


def test_resuming_with_other_eval_tasks_keeps_the_earlier_scores(tiny_llama, corpus, tmp_path):
    out = tmp_path / "run"
    mntp(tiny_llama, corpus, out, max_steps=2, eval_tasks="L2VMiniSTS")
    mntp(tiny_llama, corpus, out, max_steps=4, eval_tasks="L2VMiniClustering", eval_steps=2)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns)[5:] == ["eval_L2VMiniSTS", "eval_L2VMiniClustering", "eval_mean"]
    assert metrics.eval_L2VMiniSTS.notna().tolist() == [False, True, False, False]
    assert metrics.eval_L2VMiniClustering.notna().tolist() == [False, False, False, True]
    assert metrics.eval_mean.notna().tolist() == [False, True, False, True]
