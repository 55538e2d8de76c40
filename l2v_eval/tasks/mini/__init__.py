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

from pathlib import Path
from typing import Any

from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from ..bundled import BundledTask, read_jsonl as _read

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


def read_jsonl(name: str) -> tuple[dict, ...]:
    """Rows of one of the suite's files."""
    return _read(DATA_DIR / name)


class _Mini(BundledTask):
    data_dir = DATA_DIR


class L2VMiniSTS(_Mini, AbsTaskSTS):
    data_file, layout = "sts.jsonl", "sts"
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


class L2VMiniClassification(_Mini, AbsTaskClassification):
    data_file, layout = "classification.jsonl", "labelled"
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


class L2VMiniPairClassification(_Mini, AbsTaskPairClassification):
    data_file, layout = "pair_classification.jsonl", "pairs"
    metadata = TaskMetadata(
        name="L2VMiniPairClassification",
        description="Is the second sentence a paraphrase of the first? Half the pairs are paraphrases, half near misses." + _SMOKE,
        type="PairClassification",
        main_score="max_ap",
        prompt="Retrieve semantically similar text:",  # the paper's STS instruction
        task_subtypes=[],
        **_COMMON,
    )


class L2VMiniRetrieval(_Mini, AbsTaskRetrieval):
    data_file, layout = "retrieval", "retrieval"
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


class L2VMiniClustering(_Mini, AbsTaskClustering):
    data_file, layout = "clustering.jsonl", "labelled"
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
