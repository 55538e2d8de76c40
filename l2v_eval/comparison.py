"""Is model B better than model A? Per task and over the suite, from stored predictions (no model loaded).

For every task both models finished: their scores (mteb's main scores, as in the tidy table), Δ = B − A,
the 95% paired-bootstrap interval of Δ (both models scored on the same resampled test units), a two-sided
p-value and a verdict; then the same for the mean over those tasks (resampling within every task). The
tasks' p-values are Holm–Bonferroni adjusted, so 'B better' on any task keeps the chance of a false
verdict across all of them under 5%. See :mod:`l2v_eval.statistics` for the procedure and
:mod:`l2v_eval.predictions` for the units.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .predictions import PREDICTIONS_DIR, PredictionsError, TaskUnits, predictions_folder, task_units
from .results import load_results
from .statistics import (ALPHA, Interval, holm, paired_bootstrap_tasks, percentile_interval, resample_indices,
                         verdict)

COMPARE_COLUMNS = ("task", "score_a", "score_b", "delta", "ci_low", "ci_high", "p_value", "verdict")
MEAN_ROW = "mean"


def _runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Main-score rows of finished mteb tasks, labelled as the leaderboard labels models."""
    from .leaderboard import main_scores

    return main_scores(frame)


def resolve_model(rows: pd.DataFrame, name: str, flag: str) -> pd.DataFrame:
    """The rows of the model a user named: its table label (``org/name``, ``org/name [experiment]``), or a
    model name that has a single label."""
    labels = rows["label"].astype(str)
    chosen = rows[labels == name]
    if chosen.empty:
        candidates = rows.loc[rows["model"].astype(str) == name, "label"].unique()
        if len(candidates) == 1:
            chosen = rows[labels == candidates[0]]
        elif len(candidates) > 1:
            raise ValueError(f"{flag} {name!r} names several runs; pick one of: {', '.join(sorted(candidates))}")
    if chosen.empty:
        raise ValueError(f"{flag} {name!r} is not in the results; models there: {', '.join(sorted(labels.unique()))}")
    return chosen


def _result_cache(results_dir: Path):
    """mteb's result cache of a suite folder that kept predictions (checked first: mteb's ResultCache would
    create its folder)."""
    import mteb

    if not (results_dir / PREDICTIONS_DIR).is_dir():
        raise PredictionsError(f"{results_dir / PREDICTIONS_DIR} is missing: these results kept no predictions "
                               "(run the evaluation again with --overwrite to keep them)")
    return mteb.ResultCache(results_dir / "mteb")


def _units(results_dir: Path, cache, run: pd.DataFrame, task: str) -> list[TaskUnits]:
    """One task's units per split and subset, for one model."""
    parts = []
    for row in run[run["task"] == task].sort_values(["split", "subset"]).itertuples():
        folder = predictions_folder(cache, task, row.model, row.model_revision, row.experiment)
        parts.append(task_units(folder, task, row.task_type, row.split, row.subset, row.metric, row.value))
    return parts


def _joint_metric(parts: list[TaskUnits]):
    """A task's score over its splits and subsets (their mean, as the table's task score), on an index
    matrix whose columns are the parts' units one after another (each part drawn within itself)."""
    bounds = np.cumsum([0] + [p.n_units for p in parts])

    def metric(index: np.ndarray) -> np.ndarray:
        return np.mean([p.metric(index[:, lo:hi] - lo) for p, lo, hi in zip(parts, bounds[:-1], bounds[1:])],
                       axis=0)
    return metric


def compare(results_dir: str | os.PathLike, model_a: str, model_b: str, tasks: Sequence[str] | None = None,
            resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of two models in a suite's results folder; see the module doc. Columns:
    task, score_a, score_b, delta, ci_low, ci_high, p_value, verdict; a row per task, then ``mean``.
    Scores are mteb's main scores (0-1); ``p_value`` is Holm-adjusted across the task rows."""
    results_dir = Path(results_dir)
    rows = _runs(load_results(results_dir))
    run_a, run_b = resolve_model(rows, model_a, "model A"), resolve_model(rows, model_b, "model B")
    shared = [t for t in dict.fromkeys(run_a["task"]) if t in set(run_b["task"])]
    if tasks is not None:
        unknown = [t for t in tasks if t not in shared]
        if unknown:
            raise ValueError(f"task(s) {', '.join(unknown)} not finished by both models; both have: "
                             f"{', '.join(shared) or 'none'}")
        shared = list(dict.fromkeys(tasks))
    if not shared:
        raise ValueError(f"{model_a!r} and {model_b!r} have no finished task in common in {results_dir}")
    cache = _result_cache(results_dir)
    pairs = []
    for task in shared:
        parts_a, parts_b = _units(results_dir, cache, run_a, task), _units(results_dir, cache, run_b, task)
        sizes_a, sizes_b = [p.n_units for p in parts_a], [p.n_units for p in parts_b]
        if sizes_a != sizes_b:
            raise PredictionsError(f"{task}: the two models were scored on different test units "
                                   f"({sizes_a} vs {sizes_b}); a paired comparison needs the same ones")
        pairs.append((_joint_metric(parts_a), _joint_metric(parts_b), sizes_a))
    results = paired_bootstrap_tasks(pairs, resamples=resamples, seed=seed)
    return _table(shared, results, run_a, run_b, resamples, seed)


def _table(tasks: list[str], results, run_a, run_b, resamples: int, seed: int) -> pd.DataFrame:
    # The point estimates are mteb's saved main scores (the table's), not the recomputed ones.
    score_a = [float(run_a.loc[run_a["task"] == t, "value"].mean()) for t in tasks]
    score_b = [float(run_b.loc[run_b["task"] == t, "value"].mean()) for t in tasks]
    score_a.append(float(np.mean(score_a)))
    score_b.append(float(np.mean(score_b)))
    raw = [r.p_value for r in results]
    p_values = [*holm(raw[:-1]), raw[-1]]
    frame = pd.DataFrame({
        "task": [*tasks, MEAN_ROW], "score_a": score_a, "score_b": score_b,
        "delta": [b - a for a, b in zip(score_a, score_b)],
        "ci_low": [r.low for r in results], "ci_high": [r.high for r in results], "p_value": p_values,
    })
    frame["verdict"] = [verdict(d, p) for d, p in zip(frame["delta"], frame["p_value"])]
    frame.attrs.update(
        model_a=str(run_a["label"].iloc[0]), model_b=str(run_b["label"].iloc[0]), resamples=resamples, seed=seed,
        p_raw=raw,
        note=(f"95% paired-bootstrap intervals of delta = B - A ({resamples} resamples, seed {seed}); p-values of "
              f"the {len(tasks)} task row(s) Holm-Bonferroni adjusted across tasks (the mean row's is not); "
              f"a verdict needs p < {ALPHA:.2f}"),
    )
    return frame[list(COMPARE_COLUMNS)]


@dataclass(frozen=True)
class ModelUnits:
    """One model's main score and test units per task, read once: the interval of any mean over its tasks
    is drawn from them without reading the results or the predictions again."""

    tasks: list[str]  # the tasks asked for, in order
    scores: dict[str, float]  # the finished ones' main scores (mteb's)
    units: dict[str, list[TaskUnits]]  # per task, its units per split and subset; absent: none readable
    missing: dict[str, str]  # task -> why it has no units

    def mean_interval(self, tasks: Sequence[str], types: Mapping[str, str] | None = None, resamples: int = 1000,
                      seed: int = 0) -> Interval:
        """The bootstrap interval of the mean over ``tasks``, resampling within every task (drawn in
        ``tasks``' order from one generator seeded with ``seed``); the estimate is the mean of mteb's main
        scores. With ``types`` (task -> task type) the mean is over task types of the mean over each type's
        tasks, as ``Mean (TaskType)`` is."""
        lacking = [t for t in tasks if t not in self.units]
        if lacking:
            raise PredictionsError("; ".join(f"{t}: {self.missing[t]}" for t in lacking))
        rng = np.random.default_rng(seed)
        draws = [_joint_metric(self.units[t])(resample_indices([p.n_units for p in self.units[t]], resamples, rng))
                 for t in tasks]
        weights = np.full(len(tasks), 1 / len(tasks))
        if types is not None:  # each type weighs the same, its tasks share its weight
            per_type = pd.Series([types[t] for t in tasks]).value_counts()
            weights = np.array([1 / (len(per_type) * per_type[types[t]]) for t in tasks])
        estimate = float(np.dot(weights, [self.scores[t] for t in tasks]))
        low, high = percentile_interval(weights @ np.asarray(draws, float), estimate)
        return Interval(estimate, low, high, resamples, seed)


def model_units(results_dir: str | os.PathLike, model: str, tasks: Sequence[str] | None = None,
                table: pd.DataFrame | None = None) -> ModelUnits:
    """One model's :class:`ModelUnits` over ``tasks`` (default: all it finished); ``table``: the folder's
    results when already loaded."""
    results_dir = Path(results_dir)
    run = resolve_model(_runs(table if table is not None else load_results(results_dir)), model, "model")
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(run["task"]))
    cache = _result_cache(results_dir)
    scores, units, missing = {}, {}, {}
    for task in tasks:
        rows = run[run["task"] == task]
        if rows.empty:
            missing[task] = "not finished"
            continue
        scores[task] = float(rows["value"].mean())
        try:
            units[task] = _units(results_dir, cache, run, task)
        except (PredictionsError, FileNotFoundError) as err:  # no kept predictions for this task
            missing[task] = str(err)
    return ModelUnits(tasks, scores, units, missing)


def mean_interval(results_dir: str | os.PathLike, model: str, tasks: Sequence[str] | None = None,
                  resamples: int = 1000, seed: int = 0, types: Mapping[str, str] | None = None) -> Interval:
    """The bootstrap interval of one model's mean over ``tasks`` (default: all it finished); see
    :meth:`ModelUnits.mean_interval`."""
    read = model_units(results_dir, model, tasks)
    return read.mean_interval(read.tasks, types, resamples, seed)


def tied_with_best(results_dir: str | os.PathLike, resamples: int = 1000, seed: int = 0) -> dict[str, list[str]]:
    """Per task, the models (labels) a paired comparison cannot tell from the task's best model (p >= 0.05,
    not adjusted: a mark of 'maybe as good', not a verdict). Tasks whose best model kept no predictions
    (a shipped baseline) are left out, and so are models without predictions."""
    results_dir = Path(results_dir)
    if not (results_dir / PREDICTIONS_DIR).is_dir():
        return {}
    rows = _runs(load_results(results_dir))
    cache = _result_cache(results_dir)
    tied: dict[str, list[str]] = {}
    for task, runs in rows.groupby("task", sort=False):
        scores = runs.groupby("label")["value"].mean().sort_values(ascending=False)
        units = {}
        for label in scores.index:
            try:
                units[label] = _units(results_dir, cache, runs[runs["label"] == label], task)
            except (PredictionsError, FileNotFoundError):
                continue
        best = scores.index[0]
        if best not in units:
            continue
        tied[task] = []
        for label, parts in units.items():
            sizes = [p.n_units for p in parts]
            if label == best or sizes != [p.n_units for p in units[best]]:
                continue
            result = paired_bootstrap_tasks([(_joint_metric(units[best]), _joint_metric(parts), sizes)],
                                            resamples, seed)[0]
            if result.p_value >= ALPHA:
                tied[task].append(label)
    return tied


def format_comparison(frame: pd.DataFrame, scale: float = 100.0) -> str:
    """The comparison as a printed table (scores and intervals x100, as every l2v table)."""
    shown = frame.copy()
    for column in ("score_a", "score_b", "delta", "ci_low", "ci_high"):
        shown[column] = (shown[column] * scale).map(lambda v: f"{v:.2f}")
    shown["p_value"] = shown["p_value"].map(lambda p: f"{p:.4f}")
    head = f"A = {frame.attrs.get('model_a', 'A')}\nB = {frame.attrs.get('model_b', 'B')}"
    return "\n".join([head, shown.to_string(index=False), frame.attrs.get("note", "")])
