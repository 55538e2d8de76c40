"""l2v-train end to end on the shipped sample data and configs, with a tiny model."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from l2v_core import LLM2Vec
from l2v_cli import train as cli
from l2v_core.training import sample_path
from tests import tiny

FEW = ["--batch_size", "4", "--max_length", "64", "--save_steps", "2", "--progress_bar", "false"]
TEXTS = ["Where there is a will, there is a way.", "The early bird catches the worm."]


def test_mntp_then_simcse_then_supervised(tiny_llama, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["--base_model", str(tiny_llama)]
    assert cli.main(["mntp", sample_path("mntp.json"), *base, "--output_dir", str(runs / "mntp"),
                     "--max_steps", "3", "--merge", *FEW]) == 0
    printed = capsys.readouterr().out
    assert "mntp: 3 steps" in printed and f"merged model: {runs / 'mntp'}" in printed
    assert (runs / "mntp" / "adapter" / "adapter_config.json").is_file()

    assert cli.main(["simcse", sample_path("simcse.json"), *base, "--mntp_adapter", str(runs / "mntp" / "adapter"),
                     "--output_dir", str(runs / "simcse"), "--max_steps", "3", *FEW]) == 0
    assert cli.main(["supervised", sample_path("supervised.json"), *base, "--mntp_adapter",
                     str(runs / "mntp" / "adapter"), "--output_dir", str(runs / "supervised"), "--max_steps", "3",
                     *FEW]) == 0
    for stage in ("mntp", "simcse", "supervised"):
        metrics = pd.read_csv(runs / stage / "metrics.csv")
        assert metrics.step.tolist() == [1, 2, 3] and metrics.loss.notna().all()

    # The result loads as an encoder, and after l2v-convert with sentence-transformers.
    from sentence_transformers import SentenceTransformer

    from l2v_cli import convert

    encoder = LLM2Vec.from_pretrained(str(runs / "simcse"))
    vectors = encoder.encode(TEXTS, show_progress_bar=False)
    assert convert.main([str(runs / "simcse"), str(tmp_path / "st")]) == 0
    st = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True).cpu(), vectors, rtol=1e-4, atol=1e-4)


def test_cli_errors_are_one_clear_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "l2v_cli.train", "mntp", sample_path("mntp.json"), "--output_dir", str(tmp_path),
         "--max_step", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert "error: Unknown key 'max_step' for mntp training; did you mean 'max_steps'" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_missing_data(tiny_llama, tmp_path, capsys):
    code = cli.main(["simcse", "--base_model", str(tiny_llama), "--train_file", str(tmp_path / "nope.txt"),
                     "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert f"Training data file not found: '{tmp_path / 'nope.txt'}'" in capsys.readouterr().err
    assert cli.main(["mntp", "--base_model", str(tiny_llama), "--train_file", sample_path("fortunes.txt"),
                     "--output_dir", str(tmp_path / "o2"), "--batch_size", "0"]) == 2
    assert "`batch_size` must be > 0" in capsys.readouterr().err


def test_eval_tasks_hand_l2v_eval_s_evaluator_to_the_trainer_and_report_plots_it(tiny_llama, tmp_path, capsys,
                                                                                   monkeypatch):
    """The command line builds the evaluator from ``eval_tasks`` (l2v_eval's MtebEvaluator; here a real
    sentence-transformers evaluator stands in under its name) and the scores reach metrics.csv and the report."""
    import types

    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    asked = {}

    def evaluator(tasks, data_dir=None, batch_size=32, name=""):
        asked.update(tasks=tasks, data_dir=data_dir)
        return EmbeddingSimilarityEvaluator(tiny.CORPUS[:4], tiny.CORPUS[4:8], [0.2, 0.9, 0.4, 0.6], name="toy")

    from l2v_eval.training_eval import EvalTasksError

    monkeypatch.setitem(sys.modules, "l2v_eval.training_eval",
                        types.SimpleNamespace(MtebEvaluator=evaluator, EvalTasksError=EvalTasksError))
    out = tmp_path / "run"
    assert cli.main(["simcse", sample_path("simcse.json"), "--base_model", str(tiny_llama), "--output_dir", str(out),
                     "--max_steps", "2", "--eval_tasks", "l2v-mini", "--eval_steps", "1", *FEW]) == 0
    assert asked == {"tasks": "l2v-mini", "data_dir": None}
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.dropna(subset=["eval_toy_spearman_cosine"]).step.tolist() == [1, 2]
    assert metrics.eval_toy_spearman_cosine.between(-1, 1).all()
    assert "scores: eval_toy_pearson_cosine" in capsys.readouterr().out
    assert cli.main(["report", str(out)]) == 0
    assert (out / "report.png").stat().st_size > 1000
    assert "| toy_spearman_cosine |" in (out / "report.md").read_text()


def test_the_training_core_does_not_import_the_evaluation_package():
    code = ("import sys, l2v_core.training, l2v_core.training.contrastive, l2v_core.training.mntp; "
            "print(sorted(m for m in sys.modules if m.startswith('l2v_eval')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
    assert "l2v_eval" not in "".join(p.read_text() for p in Path(cli.__file__).parents[1].glob("l2v_core/**/*.py"))


def test_a_bad_eval_task_is_one_line_naming_the_key_before_training(tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["simcse", sample_path("simcse.json"), "--base_model", str(tiny_llama), "--output_dir", str(out),
                     "--max_steps", "2", "--eval_tasks", "L2VMiniSTSS", *FEW]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: eval_tasks:") and "L2VMiniSTSS" in err and "Traceback" not in err
    assert not (out / "adapter").exists()


def test_the_merged_output_carries_evaluation_prompts_training_instructions_and_a_card(tiny_llama, tmp_path):
    """A published merged encoder scores in plain mteb as l2v-eval scores it: it carries the instructions
    l2v-eval gives each task type, its training instructions by data set name, and l2v's model card."""
    import json

    from sentence_transformers import SentenceTransformer

    out = tmp_path / "supervised"
    assert cli.main(["supervised", sample_path("supervised.json"), "--base_model", str(tiny_llama),
                     "--output_dir", str(out), "--max_steps", "2", "--merge", *FEW]) == 0
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    trained = json.loads(Path(sample_path("supervised.json")).read_text())["instructions"]
    assert {k: prompts[k] for k in trained} == trained  # two data sets, two instructions: one prompt each
    from l2v_eval.tasks.instructions import load_instructions, sentence_transformer_prompts

    evaluation = sentence_transformer_prompts(load_instructions("default"))
    assert len(evaluation) > 50 and all(prompts[k] == v for k, v in evaluation.items())
    card = (out / "README.md").read_text()
    assert "`stage`: supervised" in card and "`max_steps`: 2" in card and str(tiny_llama) in card
    assert repr(str(out.resolve())) in card  # the usage snippet loads the published folder
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    encoder = LLM2Vec.from_pretrained(str(out), dtype="float32")
    expected = encoder.encode([[trained["quotes"], TEXTS[0]]], show_progress_bar=False)
    torch.testing.assert_close(st.encode(TEXTS[:1], prompt_name="quotes", convert_to_tensor=True).cpu(), expected,
                               rtol=1e-4, atol=1e-4)
    # The adapter folder alone is a sentence-transformers model too (base + adapter), with the same prompts and card.
    from l2v_core import load_sentence_transformer

    adapter = out / "adapter"
    assert json.loads((adapter / "config_sentence_transformers.json").read_text())["prompts"] == prompts
    assert repr(str(adapter.resolve())) in (adapter / "README.md").read_text()
    from_adapter = load_sentence_transformer(str(adapter), device="cpu")
    torch.testing.assert_close(from_adapter.encode(TEXTS[:1], prompt_name="quotes", convert_to_tensor=True).cpu(),
                               expected, rtol=1e-4, atol=1e-4)
