"""``l2v-mini``: a small bundled suite of real mteb tasks that runs offline in seconds.

Each class is an ordinary mteb task (``AbsTaskSTS``, ``AbsTaskClassification``, ...),
evaluated by mteb's own evaluators; only ``load_data`` differs: it reads the JSONL
files next to this module instead of downloading from the Hugging Face Hub.

The sentences, labels and similarity scores were written for this project (English,
everyday topics). The suite is a smoke test of the evaluation path — it tells you
that a model loads, encodes and scores sensibly — not a benchmark: a few dozen
examples per task give noisy scores that must not be compared with MTEB numbers.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

DATA_DIR = Path(__file__).resolve().parent

_SMOKE = (
    " Part of l2v-mini, a smoke-test suite: a few dozen hand-written English examples,"
    " enough to check that a model encodes sensibly, far too few for a benchmark score."
)

_COMMON: dict[str, Any] = {
    "dataset": {"path": "l2v/l2v-mini", "revision": "1"},
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("2025-01-01", "2025-12-31"),
    "domains": ["Written"],
    "dialect": [],
    "license": "mit",
    "annotations_creators": "LM-generated",
    "sample_creation": "created",
    "modalities": ["text"],
    "bibtex_citation": "",
}

# The instructions are the LLM2Vec paper's own, borrowed from the MTEB task of the
# same kind named in each comment (l2v_eval/tasks/instructions.json).


@lru_cache(maxsize=None)
def read_jsonl(name: str) -> tuple[dict, ...]:
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


class L2VMiniSTS(AbsTaskSTS):
    metadata = TaskMetadata(
        name="L2VMiniSTS",
        description="Sentence pairs with graded similarity scores from 0 (unrelated) to 5 (same meaning)." + _SMOKE,
        type="STS",
        main_score="cosine_spearman",
        prompt="Retrieve semantically similar text:",  # STS12–STS16, STSBenchmark
        task_subtypes=[],
        **_COMMON,
    )
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl("sts.jsonl")
        self.dataset = DatasetDict({"test": Dataset.from_list(list(rows))})
        self.data_loaded = True


class L2VMiniClassification(AbsTaskClassification):
    metadata = TaskMetadata(
        name="L2VMiniClassification",
        description="Topic of a sentence: weather, cooking, sport or computing (logistic regression on embeddings)." + _SMOKE,
        type="Classification",
        main_score="accuracy",
        prompt="Identify the topic or theme of the given news articles:",  # TwentyNewsgroupsClustering
        task_subtypes=["Topic classification"],
        **_COMMON,
    )
    # The train split has 10 sentences per label; mteb draws this many per label for each experiment.
    samples_per_label = 8

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl("classification.jsonl")
        labels = sorted({r["label"] for r in rows})
        splits = {}
        for split in ("train", "test"):
            chosen = [r for r in rows if r["split"] == split]
            splits[split] = Dataset.from_dict(
                {"text": [r["text"] for r in chosen], "label": [labels.index(r["label"]) for r in chosen]}
            )
        self.dataset = DatasetDict(splits)
        self.data_loaded = True


class L2VMiniPairClassification(AbsTaskPairClassification):
    metadata = TaskMetadata(
        name="L2VMiniPairClassification",
        description="Is the second sentence a paraphrase of the first? Half the pairs are paraphrases, half near misses." + _SMOKE,
        type="PairClassification",
        main_score="max_ap",
        prompt="Retrieve semantically similar text:",  # the paper's STS instruction
        task_subtypes=[],
        **_COMMON,
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl("pair_classification.jsonl")
        self.dataset = DatasetDict(
            {
                "test": Dataset.from_dict(
                    {
                        "sentence1": [r["sentence1"] for r in rows],
                        "sentence2": [r["sentence2"] for r in rows],
                        "labels": [r["label"] for r in rows],
                    }
                )
            }
        )
        self.data_loaded = True


class L2VMiniRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(
        name="L2VMiniRetrieval",
        description=(
            "General-knowledge questions against a corpus of short encyclopedic passages, some untitled and one "
            "empty, as real corpora have." + _SMOKE
        ),
        type="Retrieval",
        main_score="ndcg_at_10",
        prompt={"query": "Given a question, retrieve relevant documents that best answer the question:"},  # NFCorpus
        task_subtypes=["Question answering"],
        **_COMMON,
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        relevant: dict[str, dict[str, int]] = {}
        for r in read_jsonl("retrieval_qrels.jsonl"):
            relevant.setdefault(r["query_id"], {})[r["doc_id"]] = int(r["score"])
        split = RetrievalSplitData(
            corpus=Dataset.from_list(list(read_jsonl("retrieval_corpus.jsonl"))),
            queries=Dataset.from_list(list(read_jsonl("retrieval_queries.jsonl"))),
            relevant_docs=relevant,
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class L2VMiniClustering(AbsTaskClustering):
    metadata = TaskMetadata(
        name="L2VMiniClustering",
        description="Sentences about animals, music, space, money and health, clustered by k-means (V-measure)." + _SMOKE,
        type="Clustering",
        main_score="v_measure",
        prompt="Identify the topic or theme of the given news articles:",  # TwentyNewsgroupsClustering
        task_subtypes=["Thematic clustering"],
        **_COMMON,
    )
    # Embed every sentence: the default 4% sample of a 50-sentence set would be two sentences.
    max_fraction_of_documents_to_embed = None
    max_documents_per_cluster = 50

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        rows = read_jsonl("clustering.jsonl")
        labels = sorted({r["label"] for r in rows})
        self.dataset = DatasetDict(
            {
                "test": Dataset.from_dict(
                    {"sentences": [r["text"] for r in rows], "labels": [labels.index(r["label"]) for r in rows]}
                )
            }
        )
        self.data_loaded = True


MINI_TASKS: tuple[type, ...] = (
    L2VMiniSTS,
    L2VMiniClassification,
    L2VMiniPairClassification,
    L2VMiniRetrieval,
    L2VMiniClustering,
)
MINI_TASK_NAMES: tuple[str, ...] = tuple(cls.metadata.name for cls in MINI_TASKS)


def mini_tasks() -> list:
    """Fresh instances of every task in the suite."""
    return [cls() for cls in MINI_TASKS]
