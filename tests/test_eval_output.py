"""What a run leaves and prints: results/<suite>/ with mteb's JSON under mteb/, the shipped baselines
next to the user's model, leaderboards and reports over a folder of suites, unreadable mteb JSON,
scratch copies of other ranks, terminal output, and probe task objects."""
from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path

import pandas as pd
import pytest

from l2v_eval import leaderboard
from l2v_cli.eval import main
from l2v_eval.harness import EvalConfig, Evaluation, default_output, run_evaluation, suite_name, terminal_output
from l2v_eval.results import ResultsStore, load_results, to_frame
from l2v_eval.tasks import suites
from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS


@pytest.fixture(scope="module")
def suite_run(tiny_llama, tmp_path_factory):
    """l2v-mini's STS task run the way the README's command runs the suite: default output folder."""
    root = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        config = EvalConfig(model=str(tiny_llama), tasks="l2v-mini", show_progress=False, batch_size=16)
        summary = run_evaluation(config, tasks=[L2VMiniSTS()])
    return root, summary


def test_default_output_is_the_suite_folder_with_mteb_json_under_mteb(suite_run):
    root, summary = suite_run
    assert summary.exit_code == 0, summary.format()
    out = root / "results" / "l2v-mini"
    assert summary.output == Path("results/l2v-mini")
    assert (out / "scores.parquet").is_file() and (out / "scores.csv").is_file()
    (json_file,) = (out / "mteb" / "results" / "local__tiny-llama-0").glob("*/L2VMiniSTS.json")
    assert json.loads(json_file.read_text())["task_name"] == "L2VMiniSTS"
    assert (out / "embedding-cache" / "CACHEDIR.TAG").is_file()
    assert suite_name("sts") == "sts" and suite_name("STS12,SciFact") == "custom"
    assert default_output("probes") == Path("results/probes")


def test_summary_counts_texts_times_the_model_load_and_shows_the_baselines(suite_run):
    _, summary = suite_run
    (outcome,) = summary.outcomes
    n_sentences = 2 * 60
    assert outcome.encoded + outcome.reused == n_sentences and outcome.encoded > 0
    assert outcome.seconds > outcome.load_seconds > 0  # wall time includes the model load
    text = summary.format()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("L2VMiniSTS"))
    assert f"{outcome.encoded} texts encoded, {outcome.reused} reused" in line and "model load" in line
    assert "Embedding cache: results/l2v-mini/embedding-cache" in text

    lines = summary.comparison.splitlines()
    assert "* marks this run" in lines[0] and "l2v_eval/tasks/mini/baselines.csv" in lines[0]
    assert lines[1].split() == ["L2VMiniSTS", "Mean", "dtype"]  # the tasks of this run (a whole suite's lose their prefix)
    assert lines[2].startswith("* local/tiny-llama-0")
    baselines = {ln.split()[0] for ln in lines[3:]}
    assert baselines == {"sentence-transformers/all-MiniLM-L6-v2", "l2v/smollm2-mntp", "l2v/smollm2-mntp-simcse",
                         "local/SmolLM2-135M-Instruct.Q4_1"}
    mini = next(ln for ln in lines if "all-MiniLM" in ln).split()
    assert mini[1:] == ["66.9", "66.9", "float32"]  # the shipped row: STS ×100, the mean over the tasks run, dtype
    assert summary.comparison in text


def test_a_suite_without_a_baselines_file_prints_no_comparison(suite_run, tiny_llama, monkeypatch, tmp_path):
    root, _ = suite_run
    mini = suites.SUITES["l2v-mini"]
    monkeypatch.setitem(suites.SUITES, "l2v-mini", dataclasses.replace(mini, baselines=tmp_path / "no-baselines.csv"))
    monkeypatch.chdir(root)
    again = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="l2v-mini", show_progress=False),
                           tasks=[L2VMiniSTS()])
    assert [o.status for o in again.outcomes] == ["skipped"] and again.comparison == ""
    assert "* marks this run" not in again.format()


def write_suite(folder: Path, task: str, value: float) -> None:
    ResultsStore(folder).write(to_frame([{
        "model": "org/other", "model_revision": "r1", "experiment": "", "task": task, "task_type": "STS",
        "split": "test", "subset": "default", "metric": "cosine_spearman", "value": value, "is_main_score": True,
        "status": "ok"}]))


def test_leaderboard_and_report_read_a_folder_of_suites(suite_run, tmp_path, capsys):
    root, _ = suite_run
    results = root / "results"
    write_suite(results / "other", "STS12", 0.5)
    board_csv = tmp_path / "board.csv"
    assert main(["leaderboard", str(results), "-o", str(board_csv)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("l2v-mini (scores x100") < printed.index("other (scores x100")
    assert "sentence-transformers/all-MiniLM-L6-v2" in printed  # shipped baselines ranked with the user's model
    board = pd.read_csv(board_csv)
    assert list(board.columns[:2]) == ["suite", "label"] and set(board["suite"]) == {"l2v-mini", "other"}
    assert board.loc[board["label"] == "org/other", "STS12"].item() == 50.0

    assert main(["leaderboard", str(results / "l2v-mini"), "--no-baselines", "-o", str(board_csv)]) == 0
    assert set(pd.read_csv(board_csv)["label"]) == {"local/tiny-llama-0"}
    capsys.readouterr()

    assert main(["report", str(results), "-o", str(tmp_path / "report")]) == 0
    assert capsys.readouterr().out.split() == ["Wrote", str(tmp_path / "report" / "report.md"),
                                               "Wrote", str(tmp_path / "report" / "report.html")]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## l2v-mini" in md and "## other" in md
    table_at = md.index("### Scores per task")
    assert md[table_at:].splitlines()[2].startswith("| task | type |")  # the per-task table under its heading
    assert (tmp_path / "report" / "l2v_mini_type_sts.png").is_file()
    assert (tmp_path / "report" / "other_task_types.png").is_file()


def test_plot_range_holds_zero_and_the_whole_scale():
    from l2v_eval.report import _value_range

    low, high = _value_range([-1.0], 100.0)  # an STS of -1 (x100) is a sliver below 0, not the whole chart
    assert -10 < low < -1 and high >= 100
    assert _value_range([30.0, 95.0], 100.0)[0] == 0.0
    assert _value_range([0.2, 0.6], 1.0) == (0.0, pytest.approx(1.08))


def test_unreadable_mteb_json_is_named_moved_aside_and_recomputed(tiny_llama, tmp_path, caplog):
    config = dict(model=str(tiny_llama), tasks="custom", output=tmp_path / "out", show_progress=False)
    run_evaluation(EvalConfig(**config), tasks=[L2VMiniSTS()])
    (path,) = (tmp_path / "out" / "mteb").rglob("L2VMiniSTS.json")
    path.write_text(path.read_text()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="l2v_eval.harness"):
        again = run_evaluation(EvalConfig(**config), tasks=[L2VMiniSTS()])
    assert [o.status for o in again.outcomes] == ["ok"]  # not "skipped": the task was computed again
    assert str(path) in caplog.text and "computed again" in caplog.text
    (aside,) = path.parent.glob("L2VMiniSTS.json.unreadable-*")
    assert aside.read_text().startswith("{")
    assert json.loads(path.read_text())["task_name"] == "L2VMiniSTS"


def test_other_ranks_remove_their_scratch_copy(tiny_llama, tmp_path, monkeypatch):
    import l2v_core.distributed

    out = tmp_path / "out"
    (out / "mteb" / "results").mkdir(parents=True)
    monkeypatch.setattr(l2v_core.distributed, "world", lambda: (1, 2))
    evaluation = Evaluation(EvalConfig(model=str(tiny_llama), tasks="custom", output=out, show_progress=False),
                            tasks=[])
    scratch = Path(evaluation._scratch.name)
    assert (scratch / "mteb" / "results").is_dir() and scratch != out
    summary = evaluation.run()
    assert not scratch.exists()
    assert summary.format().startswith("rank 1: done")


def test_terminal_output_silences_only_the_named_warnings_and_logs_through_tqdm(tiny_llama, tmp_path):
    from tqdm.contrib.logging import _TqdmLoggingHandler

    deprecated = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    console = logging.StreamHandler()
    logging.root.addHandler(console)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with terminal_output():
                warnings.warn(deprecated, FutureWarning)
                warnings.warn("something users can act on", FutureWarning)
                assert any(isinstance(h, _TqdmLoggingHandler) for h in logging.root.handlers)
            warnings.warn(deprecated, FutureWarning)  # the filter ends with the run
        assert [str(w.message) for w in caught] == ["something users can act on", deprecated]
        assert console in logging.root.handlers
    finally:
        logging.root.removeHandler(console)

    # A real run with a peft adapter (peft reads the deprecated property while loading it).
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(0)
    adapter = tmp_path / "lora"
    get_peft_model(AutoModel.from_pretrained(str(tiny_llama)), LoraConfig(r=4, target_modules=["q_proj"])) \
        .save_pretrained(str(adapter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="custom", output=tmp_path / "out",
                                            peft=(str(adapter),), show_progress=False), tasks=[L2VMiniSTS()])
    assert summary.exit_code == 0
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_the_bundled_empty_document_is_not_warned_about(tiny_llama, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        summary = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="custom", output=tmp_path / "out",
                                            show_progress=False), tasks=[L2VMiniRetrieval()])
    assert summary.exit_code == 0
    assert "empty text" not in caplog.text


def test_probe_tasks_are_task_objects_with_metadata(capsys):
    from l2v_eval.probes import PROBE_TASKS, ProbeTask
    from l2v_eval.tasks import presets

    tasks = presets.resolve_tasks("probes,L2VMiniSTS")
    assert [t.metadata.name for t in tasks] == ["probe-chunk", "probe-ner", "probe-pos", "L2VMiniSTS"]
    assert all(isinstance(t, ProbeTask) and t is PROBE_TASKS[t.metadata.name] for t in tasks[:3])
    assert {t.metadata.type for t in tasks[:3]} == {"WordProbe"} and all(t.metadata.description for t in tasks[:3])
    assert presets.PROBE_TASK_NAMES == tuple(PROBE_TASKS)  # one list of names, in the probes package
    assert main(["tasks", "probes"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "probe-chunk\tWordProbe\ttest"  # after the header row
    assert leaderboard.expected_tasks("probes,L2VMiniSTS") == {"L2VMiniSTS": "STS"}


def test_shipped_baselines_have_the_columns_of_scores_csv():
    from l2v_eval.results import COLUMNS

    path = leaderboard.shipped_baselines_path("l2v-mini")
    assert list(pd.read_csv(path, nrows=1).columns) == list(COLUMNS)
    frame = load_results(path)
    assert frame["status"].eq("ok").all() and set(frame["task"].unique()) == {
        "L2VMiniSTS", "L2VMiniClassification", "L2VMiniPairClassification", "L2VMiniRetrieval", "L2VMiniClustering"}
    assert leaderboard.shipped_baselines_path("l2v-nothing") is None and leaderboard.shipped_baselines("mteb-en") is None
    assert leaderboard._short_names(["L2VMiniSTS", "L2VMiniRetrieval"]) == {"L2VMiniSTS": "STS",
                                                                              "L2VMiniRetrieval": "Retrieval"}
    assert leaderboard._short_names(["STS12", "STS13"]) == {"STS12": "STS12", "STS13": "STS13"}  # nothing left
