"""Leaderboard averages checked by hand on a small fixture, and the report built from it."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from l2v_cli.eval import main
from l2v_eval.leaderboard import MEAN_TASK, MEAN_TYPE, build_leaderboard
from l2v_eval.report import write_report
from l2v_eval.results import ResultsStore, failure_row, load_results, to_frame


def score(model, task, task_type, value, split="test", subset="default", revision="r1", experiment="",
          metric="main", main=True, layer=None):
    return {"model": model, "model_revision": revision, "experiment": experiment, "task": task,
            "task_type": task_type, "split": split, "subset": subset, "metric": metric, "value": value,
            "is_main_score": main, "layer": layer, "status": "ok", "languages": "eng-Latn"}


@pytest.fixture
def results(tmp_path):
    rows = [
        # org/a: complete
        score("org/a", "T1", "STS", 0.80, subset="en"), score("org/a", "T1", "STS", 0.60, subset="de"),
        score("org/a", "T1", "STS", 0.10, subset="en", metric="other", main=False),  # not a main score
        score("org/a", "T2", "STS", 0.50),
        score("org/a", "R1", "Retrieval", 0.40),
        score("org/a", "C1", "Classification", 0.80, split="validation"),
        score("org/a", "C1", "Classification", 1.00, split="test"),
        # org/b: has only one of T1's two subsets, so T1 counts as missing
        score("org/b", "T1", "STS", 0.90, subset="en", revision="r2"),
        score("org/b", "T2", "STS", 0.70, revision="r2"),
        score("org/b", "R1", "Retrieval", 0.60, revision="r2"),
        score("org/b", "C1", "Classification", 0.70, split="validation", revision="r2"),
        score("org/b", "C1", "Classification", 0.50, split="test", revision="r2"),
        # org/a again, run without instructions: a separate row
        score("org/a", "T2", "STS", 0.30, experiment="instructions_none"),
        # probes and failures stay out of the averages
        *[score(m, "probe-pos", "Probe", 0.5 + 0.1 * layer - (0.05 if m == "org/b" else 0), revision=r,
                metric="accuracy", layer=layer) for m, r in (("org/a", "r1"), ("org/b", "r2")) for layer in range(4)],
    ]
    frame = to_frame(rows)
    failure = failure_row(model="org/b", model_revision="r2", experiment="", task="X1", task_type="STS",
                          status="error", error="RuntimeError: boom")
    frame = pd.concat([frame, to_frame([failure])], ignore_index=True)
    out = tmp_path / "results"
    ResultsStore(out).write(frame)
    return out


def test_leaderboard_averages_by_hand(results):
    board = build_leaderboard(load_results(results)).set_index("label")
    assert set(board.index) == {"org/a", "org/b", "org/a [instructions_none]"}
    a, b = board.loc["org/a"], board.loc["org/b"]

    # task score = mean over splits and subsets
    assert a["T1"] == pytest.approx(70.0) and a["C1"] == pytest.approx(90.0)
    assert a["STS"] == pytest.approx((70 + 50) / 2)
    assert a["Retrieval"] == pytest.approx(40.0) and a["Classification"] == pytest.approx(90.0)
    assert a[MEAN_TASK] == pytest.approx((70 + 50 + 40 + 90) / 4)
    assert a[MEAN_TYPE] == pytest.approx((60 + 40 + 90) / 3)
    assert a["complete"] and a["missing_tasks"] == "" and a["n_tasks"] == 4

    # partial coverage of T1 → T1 missing → no STS mean, no overall averages
    assert math.isnan(b["T1"]) and math.isnan(b["STS"])
    assert math.isnan(b[MEAN_TASK]) and math.isnan(b[MEAN_TYPE])
    assert not b["complete"] and b["missing_tasks"] == "T1" and b["n_tasks"] == 3
    assert b["Retrieval"] == pytest.approx(60.0) and b["Classification"] == pytest.approx(60.0)

    none = board.loc["org/a [instructions_none]"]
    assert none["T2"] == pytest.approx(30.0) and none["missing_tasks"] == "C1, R1, T1"
    assert "probe-pos" not in board.columns and "X1" not in board.columns
    assert list(board.index)[0] == "org/a"  # complete models rank first
    # Borda (MTEB's rule): n_models - rank points per task, a missing task none. T1: a 2; T2: b 2, a 1, none 0;
    # R1: b 2, a 1; C1: a 2, b 1 -> a 6, b 5, none 0
    assert board["borda_rank"].to_dict() == {"org/a": 1, "org/b": 2, "org/a [instructions_none]": 3}


def test_leaderboard_task_set_and_cli(results, tmp_path, capsys):
    board = build_leaderboard(load_results(results), tasks={"T2": "STS", "R1": "Retrieval", "Z9": "Clustering"},
                              scale=1.0).set_index("label")
    assert board.loc["org/a", "missing_tasks"] == "Z9" and math.isnan(board.loc["org/a", MEAN_TASK])
    assert board.loc["org/a", "T2"] == pytest.approx(0.5)

    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(results), "-o", str(out)]) == 0
    csv = pd.read_csv(out).set_index("label")
    assert csv.loc["org/a", MEAN_TASK] == pytest.approx(62.5)
    assert csv.loc["org/a", MEAN_TYPE] == 63.33  # rounded to 2 decimals on the x100 scale
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed
    row = next(line for line in printed.splitlines() if line.startswith("org/a "))
    # tasks, rank, mean, type means; no half-width columns printed: no predictions kept, no interval known
    assert row.split() == ["org/a", "4", "1", "62.50", "63.33", "90.00", "40.00", "60.00"]
    assert " ±" not in printed and "Mean (Task) ±" in pd.read_csv(out).columns  # the CSV keeps the column
    assert pd.isna(csv.loc["org/b", MEAN_TASK]) and not csv.loc["org/b", "complete"]

    empty = tmp_path / "empty"
    ResultsStore(empty).write(to_frame([failure_row(model="o/m", model_revision="r", experiment="", task="T",
                                                    task_type="STS", status="error", error="x")]))
    assert main(["leaderboard", str(empty)]) == 2


def test_report_with_plots_tables_and_probe_curves(results, tmp_path):
    out = tmp_path / "reports" / "demo"
    md_path = write_report(results, out)
    md = md_path.read_text()
    for name in ("task_types.png", "type_sts.png", "type_retrieval.png", "type_classification.png", "probe_pos.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in md
    assert "3 model(s) and" in md  # org/a, org/a [instructions_none], org/b: counted as the tables show them
    assert "## Per task" in md and "| task | type |" in md
    assert "## Probes per layer" in md and "best layer" in md
    assert "| org/a | 3 | 0.80 |" in md  # org/a's best probe layer and value
    assert "## Failures" in md and "RuntimeError: boom" in md
    assert "lacks T1" in md
    html = (out / "report.html").read_text()
    assert html.count("<img") == md.count("![") and "<table>" in html

    assert main(["report", str(results), "-o", str(tmp_path / "cli-report")]) == 0
    assert (tmp_path / "cli-report" / "report.md").is_file()
