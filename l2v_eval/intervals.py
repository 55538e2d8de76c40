"""Bootstrap intervals of the main scores in the tidy table, from the predictions a run kept.

Each main-score row gains ``ci_low`` and ``ci_high`` (95%, percentile bootstrap over the task's test units,
:mod:`l2v_eval.statistics`) with ``ci_resamples`` and ``ci_seed``. A task whose predictions are missing or
cannot be split into units keeps empty interval columns and its score."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .predictions import PredictionsError, task_units
from .statistics import bootstrap_interval

logger = logging.getLogger(__name__)

CI_RESAMPLES = 1000
CI_SEED = 0


def with_intervals(rows: list[Mapping[str, Any]], folder: Path, resamples: int = CI_RESAMPLES,
                   seed: int = CI_SEED) -> list[dict[str, Any]]:
    """``rows`` (one task's tidy rows) with the interval columns filled on its main-score rows."""
    out = [dict(row) for row in rows]
    for row in out:
        if not row.get("is_main_score"):
            continue
        try:
            units = task_units(folder, row["task"], row["task_type"], row["split"], row["subset"], row["metric"],
                               row["value"])
        except PredictionsError as err:
            logger.info("%s: no interval (%s)", row["task"], err)
            continue
        interval = bootstrap_interval(units.metric, units.n_units, resamples=resamples, seed=seed)
        row.update(ci_low=interval.low, ci_high=interval.high, ci_resamples=resamples, ci_seed=seed)
    return out


def mean_half_widths(suite_dir: Path, labels, tasks: list[str], types: Mapping[str, str], scale: float = 100.0,
                     resamples: int = CI_RESAMPLES, seed: int = CI_SEED) -> pd.DataFrame:
    """label x column: half the width of the interval of each model's ``Mean (Task)``, ``Mean (TaskType)`` and
    mean over each task type's tasks (resampling within every task), on ``scale``. The results and each
    model's predictions are read once for all of them. NaN where a model lacks kept predictions for a mean's
    tasks (shipped baselines keep none)."""
    from .comparison import model_units
    from .leaderboard import MEAN_TASK, MEAN_TYPE
    from .results import load_results

    means = {MEAN_TASK: (tasks, None), MEAN_TYPE: (tasks, types)}
    for task_type in sorted({types[t] for t in tasks}):
        means[task_type] = ([t for t in tasks if types[t] == task_type], None)
    table, rows = load_results(suite_dir), {}
    for label in labels:
        try:
            read = model_units(suite_dir, label, tasks, table=table)
        except ValueError as err:  # not in the folder's own results (a shipped baseline), or no predictions kept
            logger.info("%s: no intervals of its means (%s)", label, err)
            continue
        rows[label] = {}
        for column, (of_tasks, weights) in means.items():
            try:
                interval = read.mean_interval(of_tasks, weights, resamples, seed)
            except PredictionsError as err:
                logger.info("%s: no interval of the %s (%s)", label, column, err)
                continue
            rows[label][column] = (interval.high - interval.low) / 2 * scale
    return pd.DataFrame.from_dict(rows, orient="index").reindex(index=list(labels), columns=list(means))


def type_half_widths(suite_dir: Path | None, types: Mapping[str, str], labels, scale: float = 100.0,
                     resamples: int = CI_RESAMPLES, seed: int = CI_SEED) -> pd.DataFrame | None:
    """task type x label: half the width of the interval of each model's mean over the type's tasks (resampling
    within every task), on ``scale``; NaN for models without kept predictions for every task of the type."""
    if suite_dir is None:
        return None
    task_types = sorted(set(types.values()))
    return mean_half_widths(suite_dir, labels, list(types), types, scale, resamples, seed)[task_types].T


HALF_WIDTH = " ±"  # suffix of a leaderboard column holding the half-width of the column it names


def half_widths(frame: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """label x task matrix of half the width of each main score's interval (mean over splits and subsets),
    on ``scale``; empty where the table has no interval."""
    from .leaderboard import main_scores

    rows = main_scores(frame)
    half = ((rows["ci_high"] - rows["ci_low"]) / 2 * scale).groupby([rows["label"], rows["task"]]).mean()
    return half.unstack("task") if not half.empty else pd.DataFrame()


def with_half_widths(board: pd.DataFrame, frame: pd.DataFrame, suite_dir: Path, scale: float = 100.0,
                     resamples: int = CI_RESAMPLES, seed: int = CI_SEED) -> pd.DataFrame:
    """The leaderboard plus ``<task> ±`` (half the width of each task score's interval, from the table) and
    ``Mean (Task) ±``, ``Mean (TaskType) ±`` and ``<task type> ±`` (:func:`mean_half_widths`), on the board's
    scale."""
    from .leaderboard import MEAN_TASK, MEAN_TYPE, main_scores

    mains = main_scores(frame)
    tasks = [c for c in board.columns if c in set(mains["task"])]
    types = dict(zip(mains["task"], mains["task_type"]))
    out = board.copy()
    matrix = half_widths(frame, scale)
    for task in tasks:
        column = matrix[task] if task in matrix else pd.Series(dtype=float)
        out[task + HALF_WIDTH] = out["label"].map(column).astype(float)
    means = mean_half_widths(suite_dir, out["label"], tasks, types, scale, resamples, seed).reindex(
        columns=[MEAN_TASK, MEAN_TYPE, *board.attrs.get("type_columns", [])])  # types no model finished: NaN
    for column in means.columns:
        out[column + HALF_WIDTH] = out["label"].map(means[column]).astype(float)
    out.attrs = dict(board.attrs)
    return out
