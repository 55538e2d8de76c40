"""Per-unit predictions of a finished evaluation, and each task's main metric recomputed on resampled units.

mteb saves what a model predicted, task by task (``mteb.evaluate(..., prediction_folder=...)``:
``<Task>_predictions.json``, ``{subset: {split: ...}}``), but not the gold answers it scored them against.
At evaluation time :func:`save_gold` writes those next to them (``<Task>_gold.json``, same layout), from the
task's loaded data, so a comparison later needs neither the model nor the data. Layout::

    <output>/predictions/<org__model>/<revision>[/experiments/<experiment>]/<Task>_predictions.json
                                                                           /<Task>_gold.json

The test units, as resampled (:func:`task_units`): queries (retrieval, reranking), pairs (STS, pair
classification), test examples (classification), items (clustering), sets (mteb's legacy clustering, one
clustering per set), texts (summarization). Each metric is mteb's own formula on
the same inputs: the score on all units rounds to the main score mteb saved, which :func:`task_units`
checks before any resampling.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import unit_metrics as um

PREDICTIONS_DIR = "predictions"
GOLD_SUFFIX = "_gold.json"
PREDICTIONS_SUFFIX = "_predictions.json"
SAVED_DECIMALS = 6  # mteb rounds every score to this many decimals when it writes a result


class PredictionsError(ValueError):
    """Stored predictions that cannot be resampled (missing, unreadable, or of a task type without units)."""


def predictions_folder(cache, task_name: str, model, revision: str | None = None,
                       experiment: str | None = None) -> Path:
    """Where a task's predictions go: the folder mteb's result cache files the task's result in, with
    ``<cache>/results`` replaced by ``<cache>/../predictions`` (so experiments stay apart as in mteb's).
    ``model``: the run's ``ModelMeta``, or a model name with its ``revision`` and ``experiment``."""
    where = {} if revision is None else {"model_revision": revision, "experiment_name": experiment or None}
    result_folder = Path(cache.get_task_result_path(task_name, model, **where)).parent
    results_root = Path(cache.cache_path) / "results"
    return Path(cache.cache_path).parent / PREDICTIONS_DIR / result_folder.relative_to(results_root)


def _data(task, split: str, subset: str):
    data = task.dataset
    if subset not in data and subset == "default":
        return data[split]
    return data[subset][split]


def _gold_of(task, split: str, subset: str) -> dict[str, Any] | None:
    """What the task's evaluation scored the predictions against, for one split and subset."""
    from mteb._evaluators.text.summarization_evaluator import DeprecatedSummarizationEvaluator
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.text.summarization import AbsTaskSummarization

    data = _data(task, split, subset)
    if isinstance(task, AbsTaskSummarization):  # mteb's predictions hold the human scores: only the formula
        return {"evaluator_with_issue_1156": issubclass(task.evaluator, DeprecatedSummarizationEvaluator)}
    if isinstance(task, AbsTaskClusteringLegacy):  # one clustering per row ("set") of the split
        return {"sets": [[str(label) for label in labels] for labels in data[task.label_column_name]]}
    if isinstance(task, AbsTaskSTS):
        return {"scores": [task._normalize(x) for x in data["score"]]}  # mteb scores normalised gold
    if isinstance(task, AbsTaskPairClassification):
        labels = data[task.label_column_name]
        return {"labels": labels[0] if len(labels) == 1 else list(labels)}  # mteb v1 rows hold all pairs
    if isinstance(task, AbsTaskClassification):
        eval_split = task.dataset[subset][split] if subset in task.dataset else task.dataset[split]
        return {"labels": list(eval_split[task.label_column_name])}
    if isinstance(task, AbsTaskRetrieval):
        return {"qrels": {q: dict(docs) for q, docs in data["relevant_docs"].items()},
                "k_values": list(task.k_values), "skip_first_result": bool(task.skip_first_result),
                "ignore_identical_ids": bool(task.ignore_identical_ids)}
    return None  # other task types (bitext mining, ...): no per-unit gold here


def save_gold(task, folder: Path) -> Path | None:
    """Write the gold answers of a loaded task next to its predictions; None for task types without
    per-unit scores here. Called before mteb evaluates the task (the same data, in the same order)."""
    from mteb.abstasks.clustering import AbsTaskClustering

    if isinstance(task, AbsTaskClustering):
        gold = _clustering_gold(task)
    else:
        gold = {subset: {split: _gold_of(task, split, subset) for split in task.eval_splits}
                for subset in task.hf_subsets}
        if any(v is None for splits in gold.values() for v in splits.values()):
            return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task.metadata.name}{GOLD_SUFFIX}"
    path.write_text(json.dumps(gold), encoding="utf-8")
    return path


def _clustering_gold(task) -> dict[str, Any]:
    """Item labels and, per level, the items of each of mteb's clustering draws. mteb draws them from the
    task's ``rng_state`` (subsample, then ``choices`` per draw) and saves only the cluster assignments;
    replaying a copy of that generator, as it is now, in mteb's order (splits, then subsets) recovers them.
    A copy of its state, not a fresh ``Random(seed)``: a task object evaluated before has moved on."""
    rng = random.Random()
    rng.setstate(task.rng_state.getstate())
    gold: dict[str, Any] = {}
    for split in task.eval_splits:
        for subset in task.hf_subsets:
            data = _data(task, split, subset)
            n_items = len(data)
            if task.max_document_to_embed is None and task.max_fraction_of_documents_to_embed is None:
                items = list(range(n_items))
            else:
                k = (int(task.max_fraction_of_documents_to_embed * n_items)
                     if task.max_fraction_of_documents_to_embed is not None else task.max_document_to_embed)
                items = rng.sample(range(n_items), k=min(n_items, k))
            labels = [lab if isinstance(lab, list) else [lab] for lab in data[task.label_column_name]]
            labels = [labels[i] for i in items]
            depth = max(map(len, labels))
            depth = min(task.max_depth, depth) if task.max_depth is not None else depth
            levels = []
            for level in range(depth):
                valid = [i for i, lab in enumerate(labels) if len(lab) > level]
                draws = [[valid[j] for j in rng.choices(range(len(valid)), k=task.max_documents_per_cluster)]
                         for _ in range(task.n_clusters)]
                levels.append(draws)
            gold.setdefault(subset, {})[split] = {"labels": labels, "draws": levels}
    return gold


@dataclass(frozen=True)
class TaskUnits:
    """One model's results on one task split and subset, as resampleable test units."""

    task: str
    unit: str  # what one unit is: query, pair, example, item
    n_units: int
    metric: Callable[[np.ndarray], np.ndarray]  # (resamples, n_units) unit indices -> main metric per row

    def score(self) -> float:
        return float(self.metric(np.arange(self.n_units)[None, :])[0])


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise PredictionsError(f"{path} is missing: the {what} of this task were not kept (run the evaluation "
                               "again with --overwrite to keep them)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise PredictionsError(f"{path} is not readable JSON ({err})") from None


def task_units(folder: str | Path, task: str, task_type: str, split: str, subset: str, metric: str,
               main_score: float | None = None) -> TaskUnits:
    """The resampleable units of one task from its stored predictions and gold. With ``main_score`` (the
    value mteb saved), the metric on all units must round to it, or the predictions belong to another run."""
    folder = Path(folder)
    builder = _BUILDERS.get(task_type)
    if builder is None:
        raise PredictionsError(f"{task}: resampling {task_type} tasks is not supported (their predictions do not "
                               "split into independent test units)")
    predicted = _read_json(folder / f"{task}{PREDICTIONS_SUFFIX}", "predictions")
    gold = _read_json(folder / f"{task}{GOLD_SUFFIX}", "gold answers")
    try:
        pred, truth = predicted[subset][split], gold[subset][split]
    except (KeyError, TypeError):
        raise PredictionsError(f"{folder / (task + PREDICTIONS_SUFFIX)} has no predictions for split {split!r}, "
                               f"subset {subset!r}") from None
    try:
        unit, n_units, fn = builder(pred, truth, metric, task)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        if isinstance(err, PredictionsError):
            raise
        raise PredictionsError(f"{folder / (task + PREDICTIONS_SUFFIX)} does not hold {task_type} predictions l2v "
                               f"can split into units ({type(err).__name__}: {err})") from None
    units = TaskUnits(task, unit, n_units, fn)
    if main_score is not None and not np.isclose(units.score(), main_score, rtol=0, atol=10 ** -SAVED_DECIMALS):
        raise PredictionsError(f"{folder / (task + PREDICTIONS_SUFFIX)}: {metric} recomputed from the predictions is "
                               f"{units.score():.6f}, the saved result says {main_score:.6f}; they are from "
                               "different runs (run the task again with --overwrite)")
    return units


def _sts(pred: Mapping, truth: Mapping, metric: str, task: str):
    kind, _, stat = metric.rpartition("_")
    column = {"cosine": "cosine_scores", "manhattan": "manhattan_distances", "euclidean": "euclidean_distances",
              "": "similarity_scores"}.get(kind)
    if column is None or stat not in ("spearman", "pearson"):
        raise PredictionsError(f"{task}: no per-pair resampling for STS metric {metric!r}")
    scores = pred.get(column) if pred.get(column) is not None else pred["cosine_scores"]  # as mteb falls back
    x, y = np.asarray(truth["scores"], float), np.asarray(scores, float)
    return "pair", len(x), um.spearman(x, y) if stat == "spearman" else um.pearson(x, y)


def _pair_classification(pred: Mapping, truth: Mapping, metric: str, task: str):
    labels = np.asarray(truth["labels"], dtype=np.int64)
    # (scores, higher means more similar) per scoring function, as mteb's AbsTaskPairClassification ranks them
    functions = {"similarity": ("similarity_scores", True), "cosine": ("cosine_scores", True),
                 "manhattan": ("manhattan_distances", False), "euclidean": ("euclidean_distances", False),
                 "dot": ("dot_scores", True)}
    kind, _, stat = metric.rpartition("_")
    if stat != "ap" or (kind != "max" and kind not in functions):
        raise PredictionsError(f"{task}: no per-pair resampling for pair classification metric {metric!r}")
    chosen = functions if kind == "max" else {kind: functions[kind]}
    aps = [um.average_precision(labels, np.asarray(pred[col], float) * (1 if higher else -1))
           for col, higher in chosen.values()]
    return "pair", len(labels), (lambda index: np.max([ap(index) for ap in aps], axis=0))


def _classification(pred: list, truth: Mapping, metric: str, task: str):
    labels = np.asarray(truth["labels"])
    experiments = np.asarray(pred)  # (n_experiments, n_examples) predicted labels
    if metric != "accuracy":
        raise PredictionsError(f"{task}: no per-example resampling for classification metric {metric!r}")
    # mteb averages the accuracy of its experiments: the mean over examples of each one's share of right answers
    return "example", len(labels), um.mean((experiments == labels[None, :]).mean(axis=0))


def _retrieval(pred: Mapping, truth: Mapping, metric: str, task: str):
    per_query = um.retrieval_per_query(pred, truth, metric)
    if per_query is None:
        raise PredictionsError(f"{task}: no per-query resampling for retrieval metric {metric!r}")
    return "query", len(per_query), um.mean(per_query, decimals=5)


def _clustering(pred: Mapping | list, truth: Mapping, metric: str, task: str):
    if metric != "v_measure":
        raise PredictionsError(f"{task}: no per-item resampling for clustering metric {metric!r}")
    if "sets" in truth:
        return _legacy_clustering(pred, truth["sets"], task)
    labels = truth["labels"]
    levels = []
    for level, draws in enumerate(truth["draws"]):
        assignments = pred[f"Level {level}"]
        # items without this level are never drawn at it
        gold = np.asarray([str(lab[level]) if len(lab) > level else "" for lab in labels])
        levels.append((gold, np.asarray(draws), np.asarray(assignments)))
    return "item", len(labels), um.v_measure(levels, len(labels))


def _legacy_clustering(pred: list, sets: list, task: str):
    """mteb's legacy clustering scores each set on its own and averages the v-measures; a set with one
    label is not clustered (v-measure 1.0, no predictions kept), as in ``AbsTaskClusteringLegacy``."""
    from sklearn.metrics.cluster import v_measure_score

    assignments = iter(pred)
    per_set = [1.0 if len(set(labels)) <= 1 else float(v_measure_score(labels, next(assignments)))
               for labels in sets]
    if next(assignments, None) is not None:
        raise PredictionsError(f"{task}: more clusterings kept than sets with two labels or more")
    return "set", len(per_set), um.mean(per_set)


def _summarization(pred: Mapping, truth: Mapping, metric: str, task: str):
    """Per text, the correlation of the human scores with the model's (mteb's ``_calculate_metrics``),
    averaged over texts. mteb's older evaluator (kept for SummEval v1, its issue 1156) averages scipy's
    (statistic, p-value) pairs, so its score per text is their mean; the saved score decides which applies."""
    from scipy.stats import pearsonr, spearmanr

    kind, _, stat = metric.rpartition("_")
    column = {"cosine": "cosine_scores", "dot": "dot_scores", "": "similarity_scores"}.get(kind)
    if column is None or stat not in ("spearman", "pearson"):
        raise PredictionsError(f"{task}: no per-text resampling for summarization metric {metric!r}")
    correlate = spearmanr if stat == "spearman" else pearsonr
    results = [correlate(human, model) for human, model in zip(pred["human_scores"], pred[column], strict=True)]
    per_text = ([float(np.mean(tuple(r))) for r in results] if truth["evaluator_with_issue_1156"]
                else [float(r.statistic) for r in results])
    return "text", len(per_text), um.mean(per_text)


_BUILDERS = {"STS": _sts, "PairClassification": _pair_classification, "Classification": _classification,
             "Retrieval": _retrieval, "Reranking": _retrieval, "InstructionRetrieval": _retrieval,
             "Clustering": _clustering, "Summarization": _summarization}
