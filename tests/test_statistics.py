"""The resampling statistics: interval coverage and test size on synthetic data with a known truth,
identical models, Holm's correction and Borda ranks against mteb's own rule."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from l2v_eval.statistics import (
    all_units,
    percentile_interval,
    bootstrap_interval,
    borda_rank,
    holm,
    paired_bootstrap,
    paired_bootstrap_tasks,
    two_sided_p,
    verdict,
)

N_DATASETS = 200
N_UNITS = 120
RESAMPLES = 1000


def mean_of(per_unit: np.ndarray):
    """The metric 'mean per-unit score' (accuracy, nDCG@10 and MRR are such means)."""
    return lambda index: per_unit[index].mean(axis=1)


def spearman_of(predicted: np.ndarray, gold: np.ndarray):
    """Spearman correlation recomputed on each resampled row (the STS main metric)."""
    def metric(index):
        x, y = rankdata(predicted[index], axis=1), rankdata(gold[index], axis=1)
        x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return metric


def synthetic_pair(rng, true_delta: float, n: int = N_UNITS):
    """Per-unit scores of two models on one test set: a shared difficulty per unit (what pairing exploits),
    model noise, and B shifted by ``true_delta`` in expectation."""
    difficulty = rng.normal(0.6, 0.15, n)
    a = difficulty + rng.normal(0, 0.08, n)
    b = difficulty + true_delta + rng.normal(0, 0.08, n)
    return a, b


def test_paired_interval_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(1234)
    true_delta = 0.02
    covered = 0
    for seed in range(N_DATASETS):
        a, b = synthetic_pair(rng, true_delta)
        result = paired_bootstrap(mean_of(a), mean_of(b), N_UNITS, resamples=RESAMPLES, seed=seed)
        assert result.delta == pytest.approx(b.mean() - a.mean())
        covered += result.low <= true_delta <= result.high
    assert 0.90 * N_DATASETS <= covered <= 0.99 * N_DATASETS, covered


def test_p_values_hold_their_size_under_the_null_and_find_a_real_difference():
    rng = np.random.default_rng(99)
    null = [paired_bootstrap(mean_of(a), mean_of(b), N_UNITS, resamples=RESAMPLES, seed=seed).p_value
            for seed, (a, b) in enumerate(synthetic_pair(rng, 0.0) for _ in range(N_DATASETS))]
    rejected = np.mean(np.array(null) < 0.05)
    assert rejected <= 0.10, rejected
    assert 0.35 < np.mean(np.array(null) < 0.5) < 0.65  # about uniform under the null, not stuck at 1
    real = [paired_bootstrap(mean_of(a), mean_of(b), N_UNITS, resamples=RESAMPLES, seed=seed).p_value
            for seed, (a, b) in enumerate(synthetic_pair(rng, 0.04) for _ in range(50))]
    assert np.mean(np.array(real) < 0.05) >= 0.9


def test_identical_predictions_give_zero_difference_zero_width_and_p_one():
    rng = np.random.default_rng(0)
    predicted, gold = rng.normal(size=80), rng.normal(size=80)
    metric = spearman_of(predicted, gold)
    result = paired_bootstrap(metric, spearman_of(predicted.copy(), gold), 80, resamples=500, seed=3)
    assert result.delta == 0 and result.low == 0 and result.high == 0 and result.p_value == 1
    assert result.score_a == pytest.approx(pd.Series(predicted).corr(pd.Series(gold), method="spearman"))
    assert verdict(result.delta, result.p_value) == "no detectable difference"


def test_interval_brackets_the_estimate_and_the_seed_reproduces_it():
    rng = np.random.default_rng(5)
    per_unit = rng.random(60)
    first = bootstrap_interval(mean_of(per_unit), 60, resamples=400, seed=7)
    again = bootstrap_interval(mean_of(per_unit), 60, resamples=400, seed=7)
    other = bootstrap_interval(mean_of(per_unit), 60, resamples=400, seed=8)
    assert first == again and (first.low, first.high) != (other.low, other.high)
    assert first.estimate == pytest.approx(per_unit.mean())
    assert first.low < first.estimate < first.high
    # About the normal-theory width for a mean: 2 x 1.96 standard errors.
    width = 2 * 1.96 * per_unit.std(ddof=1) / np.sqrt(60)
    assert first.high - first.low == pytest.approx(width, rel=0.2)


def test_suite_mean_resamples_within_every_task():
    rng = np.random.default_rng(11)
    tasks = []
    for n in (40, 70, 100):
        a, b = synthetic_pair(rng, 0.05, n)
        tasks.append((mean_of(a), mean_of(b), n))
    *per_task, mean = paired_bootstrap_tasks(tasks, resamples=800, seed=0)
    assert len(per_task) == 3
    assert mean.delta == pytest.approx(np.mean([r.delta for r in per_task]))
    assert mean.score_a == pytest.approx(np.mean([r.score_a for r in per_task]))
    # Averaging three independent tasks narrows the interval below the widest task's.
    assert mean.high - mean.low < max(r.high - r.low for r in per_task)
    assert mean.low < mean.delta < mean.high


def test_p_value_is_the_dual_of_the_interval():
    assert two_sided_p(np.zeros(99), 0.0) == 1.0
    assert two_sided_p(np.full(99, 0.3), 0.3) == pytest.approx(2 / 100)  # every draw above zero
    assert two_sided_p(np.full(99, -0.3), -0.3) == pytest.approx(2 / 100)
    assert two_sided_p(np.linspace(-1, 1, 101), 0.0) == 1.0
    rng = np.random.default_rng(4)
    for center in (0.5, 1.5, 2.5, 3.5):
        draws = rng.normal(center, 1.0, 2000)
        low, high = percentile_interval(draws, center)
        assert (two_sided_p(draws, center) < 0.05) == (low > 0), center


def test_interval_is_centred_on_the_estimate_when_resampling_shifts_the_metric():
    rng = np.random.default_rng(8)
    draws = rng.normal(-1.0, 0.5, 4000)  # resampled values shifted well below the estimate 0
    low, high = percentile_interval(draws, 0.0)
    assert low < 0 < high and abs(low + high) < 0.05  # the spread of the draws, around the estimate
    assert high - low == pytest.approx(np.subtract(*np.quantile(draws, [0.975, 0.025])))
    assert percentile_interval(draws, -1.0) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), abs=0.02)


def test_holm_matches_the_step_down_procedure():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005*5=0.025, 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> 0.09 (monotone), 0.5*1=0.5
    assert holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.025, 0.5])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]
    assert holm([]).tolist() == []


def test_borda_rank_follows_mteb_rule():
    scores = pd.DataFrame({"T1": [0.9, 0.8, 0.8, 0.1], "T2": [0.2, 0.7, 0.6, 0.9], "T3": [0.5, np.nan, 0.4, 0.3]},
                          index=["m1", "m2", "m3", "m4"])
    ranks = borda_rank(scores)
    # points (n - rank): T1 3, 1.5, 1.5, 0; T2 0, 2, 1, 3; T3 3, -, 2, 1 -> 6, 3.5, 4.5, 4
    assert ranks.to_dict() == {"m1": 1, "m2": 4, "m3": 2, "m4": 3}
    assert borda_rank({"a": {"T": 1.0}, "b": {"T": 1.0}}).to_dict() == {"a": 1, "b": 1}


def test_borda_rank_equals_mteb_own_implementation():
    pl = pytest.importorskip("polars")
    from mteb.benchmarks._create_table import _borda_rank_from_long

    rng = np.random.default_rng(2)
    wide = pd.DataFrame(rng.integers(0, 5, size=(7, 6)) / 4, index=[f"m{i}" for i in range(7)],
                        columns=[f"T{j}" for j in range(6)])
    wide.iloc[2, 3] = wide.iloc[5, 0] = np.nan
    long = wide.stack().rename("score").rename_axis(["model_name", "task_name"]).reset_index()
    theirs = _borda_rank_from_long(pl.from_pandas(long), n_models=len(wide)).to_pandas()
    assert borda_rank(wide).to_dict() == dict(zip(theirs["model_name"], theirs["Rank (Borda)"]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="0 test units"):
        bootstrap_interval(lambda i: i.mean(axis=1), 0)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(lambda i: i.mean(axis=1), 5, resamples=0)
    assert all_units(3).tolist() == [[0, 1, 2]]
