"""Task types of mteb-en whose units are not the l2v-mini ones: legacy clustering (one clustering per set)
and summarization (one correlation per text, with mteb's old evaluator for SummEval v1). mteb evaluates a
small task of each kind with a real encoder and keeps its predictions; the units l2v reads from them must
give back the main score mteb saved, exactly."""
from __future__ import annotations

import json

import mteb
import pytest
from datasets import Dataset, DatasetDict
from mteb._evaluators.text.summarization_evaluator import DeprecatedSummarizationEvaluator
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.abstasks.text.summarization import AbsTaskSummarization
from mteb.cache import ResultCache

from l2v_eval.predictions import GOLD_SUFFIX, PredictionsError, predictions_folder, save_gold, task_units
from l2v_eval.statistics import bootstrap_interval
from l2v_eval.tasks.mini import read_jsonl

COMMON = dict(dataset={"path": "l2v/test-units", "revision": "1"}, category="t2t", eval_splits=["test"],
              eval_langs=["eng-Latn"], date=("2025-01-01", "2025-12-31"), domains=["Written"], dialect=[],
              license="mit", annotations_creators="LM-generated", sample_creation="created", modalities=["text"],
              bibtex_citation="", task_subtypes=[], description="A small task for the tests of resampling units.")


class _InMemory:
    rows: dict = {}

    def load_data(self, num_proc=None, **kwargs):
        self.dataset = DatasetDict({"test": Dataset.from_dict(self.rows)})
        self.data_loaded = True


def _clustering_sets() -> dict:
    rows = read_jsonl("clustering.jsonl")
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["text"])
    labels = sorted(by_label)
    sets = [[(text, label) for label in labels[:3] for text in by_label[label]],
            [(text, label) for label in labels[2:] for text in by_label[label]],
            [(text, labels[0]) for text in by_label[labels[0]]]]  # one label: mteb scores 1.0 and keeps nothing
    return {"sentences": [[t for t, _ in s] for s in sets], "labels": [[lab for _, lab in s] for s in sets]}


class LegacyClustering(_InMemory, AbsTaskClusteringLegacy):
    metadata = TaskMetadata(name="TestLegacyClustering", type="Clustering", main_score="v_measure", **COMMON)
    rows = _clustering_sets()


def _summaries() -> dict:
    rows = read_jsonl("sts.jsonl")
    texts = []
    for i in range(0, len(rows) - 6, 2):
        group = rows[i:i + 6]
        texts.append({"text": group[0]["sentence1"], "human_summaries": [group[0]["sentence2"]],
                      "machine_summaries": [r["sentence2"] for r in group],
                      "relevance": [5.0 if k == 0 else r["score"] / 2 for k, r in enumerate(group)]})
    return {key: [t[key] for t in texts] for key in texts[0]}


class Summarization(_InMemory, AbsTaskSummarization):
    metadata = TaskMetadata(name="TestSummarization", type="Summarization", main_score="cosine_spearman", **COMMON)
    rows = _summaries()
    min_score, max_score = 0, 5


class OldSummarization(Summarization):
    metadata = TaskMetadata(name="TestOldSummarization", type="Summarization", main_score="cosine_spearman",
                            **COMMON)
    evaluator = DeprecatedSummarizationEvaluator  # as mteb's SummEval (v1) scores


@pytest.fixture(scope="module")
def evaluated(minilm_dir, tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    model = mteb.models.SentenceTransformerEncoderWrapper(SentenceTransformer(minilm_dir, device="cpu"))
    cache = ResultCache(tmp_path_factory.mktemp("units") / "mteb")
    out = {}
    for task in (LegacyClustering(), Summarization(), OldSummarization()):
        task.load_data()
        folder = predictions_folder(cache, task.metadata.name, model.mteb_model_meta)
        assert save_gold(task, folder) is not None
        result = mteb.evaluate(model, [task], cache=cache, prediction_folder=folder, show_progress_bar=False)
        out[task.metadata.name] = (folder, result.task_results[0].scores["test"][0]["main_score"])
    return out


@pytest.mark.parametrize("task, unit, n_units", [("TestLegacyClustering", "set", 3),
                                                 ("TestSummarization", "text", len(_summaries()["text"])),
                                                 ("TestOldSummarization", "text", len(_summaries()["text"]))])
def test_units_of_legacy_clustering_and_summarization_give_back_mteb_main_score(evaluated, task, unit, n_units):
    folder, saved = evaluated[task]
    units = task_units(folder, task, "Clustering" if "Clustering" in task else "Summarization", "test", "default",
                       evaluated_metric(task), main_score=saved)
    assert (units.unit, units.n_units) == (unit, n_units)
    assert units.score() == pytest.approx(saved, abs=1e-6)
    interval = bootstrap_interval(units.metric, units.n_units, resamples=200, seed=0)
    assert interval.low <= saved <= interval.high and interval.low < interval.high


def evaluated_metric(task: str) -> str:
    return "v_measure" if "Clustering" in task else "cosine_spearman"


def test_the_old_summarization_formula_is_told_apart_by_the_gold_file(evaluated):
    """The two summarization evaluators give different scores on the same predictions: reading the old
    one's predictions with the new formula no longer gives back the saved score, and is refused."""
    folder, saved = evaluated["TestOldSummarization"]
    gold = folder / f"TestOldSummarization{GOLD_SUFFIX}"
    data = json.loads(gold.read_text())
    assert data["default"]["test"] == {"evaluator_with_issue_1156": True}
    data["default"]["test"]["evaluator_with_issue_1156"] = False
    gold.write_text(json.dumps(data))
    try:
        with pytest.raises(PredictionsError, match="different runs"):
            task_units(folder, "TestOldSummarization", "Summarization", "test", "default", "cosine_spearman",
                       main_score=saved)
    finally:
        data["default"]["test"]["evaluator_with_issue_1156"] = True
        gold.write_text(json.dumps(data))
