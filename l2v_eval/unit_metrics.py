"""mteb's main metrics as functions of resampled test units, vectorised over resamples.

Each factory takes one model's per-unit data and returns ``metric(index) -> scores``: ``index`` is a
(resamples, n_units) matrix of unit indices (a bootstrap draw per row, repeats allowed) and the result the
metric on each row. A unit drawn k times counts k times, exactly as if the test set held k copies of it.

Per-query retrieval scores come from the code mteb scores with (pytrec_eval, called as mteb's
``calculate_retrieval_scores`` calls it, and mteb's ``mrr``). Rank correlations, average precision and the V-measure are written out here because sklearn and
scipy compute them one sample at a time (1,000 resamples x 5 scoring functions of sklearn's
``average_precision_score`` take seconds per task); each follows its library's formula (scipy's average
ranks, sklearn's step-wise AP over distinct thresholds and its entropy-based V-measure), and the tests
check them against those libraries.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.stats import rankdata


def unit_counts(index: np.ndarray, n_units: int) -> np.ndarray:
    """(resamples, n_units) times each unit is drawn in each row."""
    rows = index.shape[0]
    flat = (index + np.arange(rows)[:, None] * n_units).ravel()
    return np.bincount(flat, minlength=rows * n_units).reshape(rows, n_units).astype(float)


def mean(per_unit: Sequence[float], decimals: int | None = None):
    """Metrics that average a per-unit score (accuracy, nDCG@k, MAP@k, MRR@k): the mean over drawn units,
    rounded as mteb rounds it (``decimals``) so the score on all units is mteb's own."""
    values = np.asarray(per_unit, dtype=float)

    def metric(index: np.ndarray) -> np.ndarray:
        scores = values[index].mean(axis=1)
        return np.round(scores, decimals) if decimals is not None else scores
    return metric


def ratio(numerators: Sequence[float], denominators: Sequence[float]):
    """Metrics pooled over units before dividing (token accuracy: correct / tokens; span F1:
    2 x correct / (predicted + gold spans)): the drawn units' sums divided, 0 where nothing was drawn."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)

    def metric(index: np.ndarray) -> np.ndarray:
        top, bottom = num[index].sum(axis=1), den[index].sum(axis=1)
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)
    return metric


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


def pearson(gold: np.ndarray, predicted: np.ndarray):
    return lambda index: _row_pearson(gold[index], predicted[index])


def spearman(gold: np.ndarray, predicted: np.ndarray):
    """Spearman's rho as scipy computes it: Pearson's r of average ranks (repeated units tie)."""
    return lambda index: _row_pearson(rankdata(gold[index], axis=1), rankdata(predicted[index], axis=1))


def average_precision(labels: np.ndarray, scores: np.ndarray):
    """sklearn's ``average_precision_score`` (higher score = predicted positive) with each unit weighted by
    the times it is drawn: Σ (R_t − R_{t−1}) · P_t over the distinct score thresholds, highest first."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order].astype(float)
    # the last position of each run of tied scores: a threshold takes its whole tie group at once
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])

    def metric(index: np.ndarray) -> np.ndarray:
        weights = unit_counts(index, len(scores))[:, order]
        true_pos = np.cumsum(weights * positive, axis=1)[:, ends]
        predicted_pos = np.cumsum(weights, axis=1)[:, ends]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted_pos > 0, true_pos / predicted_pos, 0.0)
            recall = true_pos / true_pos[:, -1:]
        steps = np.diff(recall, axis=1, prepend=0.0)
        return (steps * precision).sum(axis=1)
    return metric


# mteb's main-score names of retrieval metrics -> (pytrec_eval measure, its per-query key prefix)
_PYTREC = {"ndcg_at_": ("ndcg_cut", "ndcg_cut_"), "map_at_": ("map_cut", "map_cut_"), "recall_at_": ("recall", "recall_"),
           "precision_at_": ("P", "P_"), "hit_rate_at_": ("success", "success_")}


def retrieval_per_query(results: Mapping, gold: Mapping, metric: str) -> np.ndarray | None:
    """One score per evaluated query, from mteb's retrieval scoring of the saved rankings; None for a
    metric that is not a per-query average."""
    import pytrec_eval
    from mteb._evaluators.retrieval_metrics import mrr

    results = {q: dict(docs) for q, docs in results.items()}
    if gold["ignore_identical_ids"]:  # as mteb's RetrievalEvaluator.evaluate drops them before scoring
        results = {q: {d: s for d, s in docs.items() if d != q} for q, docs in results.items()}
    qrels = gold["qrels"]
    k_values = list(gold["k_values"])
    prefix, _, k = metric.rpartition("_at_")
    if not k.isdigit() or int(k) not in k_values:
        return None
    if gold["skip_first_result"]:  # as mteb's calculate_retrieval_scores
        results = {q: dict(sorted(docs.items(), key=lambda x: x[1], reverse=True)[1:]) for q, docs in results.items()}
    if prefix == "mrr":
        return np.asarray(mrr(qrels, results, k_values)[f"MRR@{k}"], dtype=float)
    if prefix + "_at_" not in _PYTREC:
        return None
    family, key = _PYTREC[prefix + "_at_"]
    # The evaluator calculate_retrieval_scores builds, asked for this one measure only (mteb's also computes
    # abstention curves for every measure, seconds per task that no resample needs).
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"{family}." + ",".join(map(str, k_values))})
    return np.asarray([scores[key + k] for scores in evaluator.evaluate(results).values()], dtype=float)


def _entropy(counts: np.ndarray, total: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total[:, None]
        return -np.where(counts > 0, p * np.log(np.where(counts > 0, p, 1.0)), 0.0).sum(axis=1)


def _v_measure_rows(table: np.ndarray) -> np.ndarray:
    """sklearn's V-measure (β = 1) of each row's (gold × cluster) weighted contingency table."""
    total = table.sum(axis=(1, 2))
    gold_counts, cluster_counts = table.sum(axis=2), table.sum(axis=1)
    h_gold, h_cluster = _entropy(gold_counts, total), _entropy(cluster_counts, total)
    with np.errstate(invalid="ignore", divide="ignore"):
        outer = gold_counts[:, :, None] * cluster_counts[:, None, :]
        ratio = np.where(table > 0, table * total[:, None, None] / np.where(outer > 0, outer, 1.0), 1.0)
        mutual = np.maximum((table / total[:, None, None] * np.log(ratio)).sum(axis=(1, 2)), 0.0)
        homogeneity = np.where(h_gold > 0, mutual / h_gold, 1.0)
        completeness = np.where(h_cluster > 0, mutual / h_cluster, 1.0)
        both = homogeneity + completeness
        return np.where(both > 0, 2 * homogeneity * completeness / np.where(both > 0, both, 1.0), 0.0)


def v_measure(levels: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_items: int):
    """mteb's clustering score: the mean V-measure over its draws (at every level), each draw's items
    weighted by the times the resample drew them. ``levels``: (gold label per item, draws as item indices
    (n_draws, draw_size), cluster of each drawn position (n_draws, draw_size))."""
    prepared = []
    for gold, draws, assignments in levels:
        _, gold_ids = np.unique(gold, return_inverse=True)
        n_gold, n_clusters = gold_ids.max() + 1, int(assignments.max()) + 1
        for items, clusters in zip(draws, assignments):
            cells = gold_ids[items] * n_clusters + clusters
            # one-hot (drawn position -> contingency cell): weights @ it is the weighted contingency table
            onehot = sparse.csr_matrix((np.ones(len(cells)), (np.arange(len(cells)), cells)),
                                       shape=(len(cells), n_gold * n_clusters))
            prepared.append((items, onehot, n_gold, n_clusters))

    def metric(index: np.ndarray) -> np.ndarray:
        weights = unit_counts(index, n_items)
        per_draw = []
        for items, onehot, n_gold, n_clusters in prepared:
            table = np.asarray((onehot.T @ weights[:, items].T).T).reshape(-1, n_gold, n_clusters)
            per_draw.append(_v_measure_rows(table))
        return np.mean(per_draw, axis=0)
    return metric
