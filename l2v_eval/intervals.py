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


def type_half_widths(suite_dir: Path | None, types: Mapping[str, str], labels, scale: float = 100.0,
                     resamples: int = CI_RESAMPLES, seed: int = CI_SEED) -> pd.DataFrame | None:
    """task type x label: half the width of the interval of each model's mean over the type's tasks (resampling
    within every task), on ``scale``; left out for models without kept predictions or without every task."""
    from .comparison import mean_interval

    if suite_dir is None:
        return None
    half: dict[str, dict[str, float]] = {}
    for label in labels:
        for task_type in sorted(set(types.values())):
            tasks = [task for task, of_type in types.items() if of_type == task_type]
            try:
                interval = mean_interval(suite_dir, label, tasks, resamples, seed)
            except (ValueError, FileNotFoundError, KeyError) as err:  # no kept predictions for these tasks
                logger.info("%s, %s: no interval of the type mean (%s)", label, task_type, err)
                continue
            half.setdefault(label, {})[task_type] = (interval.high - interval.low) / 2 * scale
    return pd.DataFrame(half)


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
    ``Mean (Task) ±``, ``Mean (TaskType) ±`` and ``<task type> ±`` (from resampling within every task; models whose predictions
    were not kept, such as shipped baselines, get none), on the board's scale."""
    from .comparison import mean_interval
    from .leaderboard import MEAN_TASK, MEAN_TYPE, main_scores

    mains = main_scores(frame)
    tasks = [c for c in board.columns if c in set(mains["task"])]
    types = dict(zip(mains["task"], mains["task_type"]))
    out = board.copy()
    matrix = half_widths(frame, scale)
    for task in tasks:
        column = matrix[task] if task in matrix else pd.Series(dtype=float)
        out[task + HALF_WIDTH] = out["label"].map(column).astype(float)
    for column, of_types in ((MEAN_TASK, None), (MEAN_TYPE, types)):
        halves = []
        for label, complete in zip(out["label"], out["complete"]):
            try:
                interval = mean_interval(suite_dir, label, tasks, resamples, seed, of_types) if complete else None
            except (ValueError, FileNotFoundError) as err:  # no kept predictions for this model
                logger.info("%s: no interval of the %s (%s)", label, column, err)
                interval = None
            halves.append((interval.high - interval.low) / 2 * scale if interval is not None else float("nan"))
        out[column + HALF_WIDTH] = halves
    type_half = type_half_widths(suite_dir, types, out["label"], scale, resamples, seed)
    for task_type in board.attrs.get("type_columns", []):
        known = type_half is not None and task_type in type_half.index
        column = type_half.loc[task_type] if known else pd.Series(dtype=float)
        out[task_type + HALF_WIDTH] = out["label"].map(column).astype(float)
    out.attrs = dict(board.attrs)
    return out
