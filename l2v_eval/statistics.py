"""Resampling statistics for task scores: bootstrap intervals, paired tests, Holm's correction, Borda ranks.

A task's score is a function of its test units (queries, pairs, examples, items). A *metric* here is a
callable that takes a matrix of unit indices, one resample per row (indices repeat: a bootstrap draw), and
returns the task's main metric recomputed on each row. Passing ``np.arange(n)[None]`` gives the score on
the data as it is. Two models are compared on the *same* rows, so the interval of Δ = B − A keeps the
pairing (a unit that is hard for A is hard for B too) and is far narrower than two separate intervals.

Neither mteb nor scipy offers a paired bootstrap over an arbitrary metric of test units (scipy's
``bootstrap`` resamples the units it is given but cannot share one set of draws across two statistics
and several tasks), so the draws and percentiles are written here; the metrics themselves are mteb's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from l2v_core.errors import check_positive_int

Metric = Callable[[np.ndarray], np.ndarray]  # (resamples, n_units) unit indices -> (resamples,) scores

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


Units = int | Sequence[int]  # a task's number of test units, or the sizes of its strata (splits x subsets)


def resample_indices(n_units: Units, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` bootstrap draws of unit indices (with replacement), one draw per row. With strata
    sizes, each stratum is drawn within itself (its units keep their place, offset by the strata before)."""
    sizes = [n_units] if isinstance(n_units, (int, np.integer)) else list(n_units)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"cannot resample a task with {n_units} test units")
    check_positive_int("resamples", resamples)
    offsets = np.cumsum([0, *sizes[:-1]])
    return np.concatenate([offset + rng.integers(0, size, size=(resamples, size))
                           for offset, size in zip(offsets, sizes)], axis=1)


def all_units(n_units: Units) -> np.ndarray:
    """The data as it is, as one 'resample' (a 1-row index matrix)."""
    total = n_units if isinstance(n_units, (int, np.integer)) else sum(n_units)
    return np.arange(total)[None, :]


def recentred(values: np.ndarray, estimate: float) -> np.ndarray:
    """The resampled values moved so that their median is the estimate.

    A resample repeats some units and drops others. For a metric that averages units (accuracy, nDCG) that
    leaves the values centred on the estimate; for a metric of the whole set (a V-measure, a rank
    correlation) repeated units shift every resampled value the same way, a shift the estimate on the
    real test set does not have, and the plain percentile interval can then miss its own estimate (it did
    for V-measures on l2v-mini). The spread of the values is kept; only their centre is put back."""
    values = np.asarray(values, dtype=float)
    return values + (estimate - np.median(values))


def percentile_interval(values: np.ndarray, estimate: float,
                        confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of the recentred resampled values (see :func:`recentred`)."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(recentred(values, estimate), [tail, 1 - tail])
    return float(low), float(high)


def two_sided_p(deltas: np.ndarray, estimate: float) -> float:
    """Two-sided bootstrap p-value of 'Δ = 0', the dual of :func:`percentile_interval`: twice the smaller
    share of the recentred Δ on either side of zero (zero counts for both sides), with the +1 correction
    that keeps it above 0 (Davison & Hinkley 1997, ch. 4). It is below α about exactly when 0 lies
    outside the (1 − α) interval. Identical models (every Δ zero) give 1."""
    shifted = recentred(deltas, estimate)
    n = len(shifted)
    below = (np.count_nonzero(shifted <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(shifted >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


@dataclass(frozen=True)
class Interval:
    """A score with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    resamples: int
    seed: int


@dataclass(frozen=True)
class PairedResult:
    """Δ = B − A on the same resampled units."""

    score_a: float
    score_b: float
    delta: float
    low: float
    high: float
    p_value: float


def bootstrap_interval(metric: Metric, n_units: Units, resamples: int = 1000, seed: int = 0,
                       confidence: float = CONFIDENCE) -> Interval:
    """Percentile bootstrap interval of one task's metric over its ``n_units`` test units."""
    index = resample_indices(n_units, resamples, np.random.default_rng(seed))
    estimate = float(metric(all_units(n_units))[0])
    values = metric(index)
    low, high = percentile_interval(values, estimate, confidence)
    return Interval(estimate, low, high, resamples, seed)


def paired_bootstrap(metric_a: Metric, metric_b: Metric, n_units: Units, resamples: int = 1000, seed: int = 0,
                     confidence: float = CONFIDENCE) -> PairedResult:
    """Interval and p-value of Δ = B − A on one task, both metrics evaluated on the same draws."""
    return paired_bootstrap_tasks([(metric_a, metric_b, n_units)], resamples, seed, confidence)[0]


def paired_bootstrap_tasks(tasks: Sequence[tuple[Metric, Metric, Units]], resamples: int = 1000, seed: int = 0,
                           confidence: float = CONFIDENCE) -> list[PairedResult]:
    """Δ = B − A for each task, then for the mean over tasks (the last result). Every task draws its own
    units (independently of the others: the tasks' test sets are independent samples); the mean's
    resampled values average the tasks' resampled values draw by draw, so its interval resamples within
    every task."""
    rng = np.random.default_rng(seed)
    results, draws_a, draws_b = [], [], []
    for metric_a, metric_b, n_units in tasks:
        index = resample_indices(n_units, resamples, rng)
        full = all_units(n_units)
        score_a, score_b = float(metric_a(full)[0]), float(metric_b(full)[0])
        values_a, values_b = np.asarray(metric_a(index), float), np.asarray(metric_b(index), float)
        results.append(_paired(score_a, score_b, values_b - values_a, confidence))
        draws_a.append(values_a)
        draws_b.append(values_b)
    if len(tasks) > 1:
        mean_a = float(np.mean([r.score_a for r in results]))
        mean_b = float(np.mean([r.score_b for r in results]))
        deltas = np.mean(draws_b, axis=0) - np.mean(draws_a, axis=0)
        results.append(_paired(mean_a, mean_b, deltas, confidence))
    elif results:
        results.append(results[0])  # the mean over one task is that task
    return results


def _paired(score_a: float, score_b: float, deltas: np.ndarray, confidence: float) -> PairedResult:
    delta = score_b - score_a
    low, high = percentile_interval(deltas, delta, confidence)
    return PairedResult(score_a, score_b, delta, low, high, two_sided_p(deltas, delta))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order: reject
    hypothesis i at level α when its adjusted p is below α; the family-wise error stays at most α."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def verdict(delta: float, p_value: float, alpha: float = ALPHA) -> str:
    if p_value < alpha and delta > 0:
        return "B better"
    if p_value < alpha and delta < 0:
        return "A better"
    return "no detectable difference"


def borda_rank(scores: pd.DataFrame | Mapping[str, Mapping[str, float]]) -> pd.Series:
    """Borda-count rank of models (rows) over tasks (columns), 1 = best, as the MTEB leaderboard ranks.

    Same rule as mteb's ``_borda_rank_from_long`` (mteb/benchmarks/_create_table.py; private, so not called
    here, and written for polars frames): in each task a model earns ``n_models - rank`` points, ranks
    averaged over ties and higher scores first; a task a model lacks earns it nothing; the point totals
    are ranked again with ties sharing the best (``min``) rank.
    """
    table = pd.DataFrame(scores).T if isinstance(scores, Mapping) else scores
    n_models = len(table)
    points = (n_models - table.rank(axis=0, method="average", ascending=False)).sum(axis=1, skipna=True)
    return points.rank(method="min", ascending=False).astype(int).rename("borda_rank")
