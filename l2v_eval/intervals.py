"""Bootstrap intervals of the main scores in the tidy table, from the predictions a run kept.

Each main-score row gains ``ci_low`` and ``ci_high`` (95%, percentile bootstrap over the task's test units,
:mod:`l2v_eval.statistics`) with ``ci_resamples`` and ``ci_seed``. A task whose predictions are missing or
cannot be split into units keeps empty interval columns and its score."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
