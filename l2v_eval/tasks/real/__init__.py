"""``l2v-real``: the default suite, five mteb tasks on real text that ships with the package.

Built from Debian packages by ``build.py`` (sources and licences in ``SOURCES.md``) and frozen
here, so it runs offline in a few minutes on a CPU; nobody on this project wrote the texts.
Each task is an ordinary mteb task scored by mteb's evaluators. Test items are disjoint from
the training files under ``train/`` (a hash of each package, fortune or Bible chapter decides
its side; the Bible translations feed training only), so an encoder trained on those files is
scored on texts it never saw.

=========================  ====================  ===============================================
task                       type                  texts
=========================  ====================  ===============================================
L2VRealPackageRetrieval    Retrieval             package synopsis -> its long description (400)
L2VRealQuotePairs          PairClassification    beginning of a quotation vs an ending: its own, or
                                                 the one sharing most words with it (300 pairs)
L2VRealPackageSection      Classification        package description -> archive section (8)
L2VRealFortuneClustering   Clustering            quotations by fortune file (8 topics, 400)
L2VRealQuoteCompletion     Reranking             first half of a quotation -> its second half
                                                 among 10 candidates (300 queries)
=========================  ====================  ===============================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from ..bundled import BundledTask

DATA_DIR = Path(__file__).resolve().parent
TRAIN_DIR = DATA_DIR / "train"

_COMMON: dict[str, Any] = {
    "dataset": {"path": "l2v/l2v-real", "revision": "1"},
    "category": "t2t",
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("1900-01-01", "2025-05-20"),
    "dialect": [],
    "annotations_creators": "derived",
    "sample_creation": "found",
    "modalities": ["text"],
    "bibtex_citation": "",
}


class _Real(BundledTask):
    data_dir = DATA_DIR


class L2VRealPackageRetrieval(_Real, AbsTaskRetrieval):
    data_file, layout = "retrieval", "retrieval"
    metadata = TaskMetadata(
        name="L2VRealPackageRetrieval",
        description="Debian package synopses as queries against the packages' long descriptions (first "
                    "paragraph); one relevant document per query.",
        type="Retrieval",
        main_score="ndcg_at_10",
        prompt={"query": "Given a short software package summary, retrieve the package's full description"},
        task_subtypes=[],
        domains=["Programming", "Written"],
        license="https://www.debian.org/legal/licenses/",
        **_COMMON,
    )


class L2VRealQuotePairs(_Real, AbsTaskPairClassification):
    data_file, layout = "pair_classification.jsonl", "pairs"
    metadata = TaskMetadata(
        name="L2VRealQuotePairs",
        description="The beginning of a quotation and an ending: its own (half the pairs) or the ending of "
                    "another quotation that shares the most words with the beginning.",
        type="PairClassification",
        main_score="max_ap",
        prompt="Retrieve semantically similar text",
        task_subtypes=[],
        domains=["Fiction", "Written"],
        license="bsd-3-clause",
        **_COMMON,
    )


class L2VRealPackageSection(_Real, AbsTaskClassification):
    data_file, layout = "classification.jsonl", "labelled"
    metadata = TaskMetadata(
        name="L2VRealPackageSection",
        description="Archive section of a Debian package (admin, games, graphics, math, net, science, sound, "
                    "text) from its synopsis and description; logistic regression on embeddings.",
        type="Classification",
        main_score="accuracy",
        prompt="Classify the software package into its category",
        task_subtypes=["Topic classification"],
        domains=["Programming", "Written"],
        license="https://www.debian.org/legal/licenses/",
        **_COMMON,
    )
    samples_per_label = 16  # of the 20 train rows per label, for each of mteb's experiments


class L2VRealFortuneClustering(_Real, AbsTaskClustering):
    data_file, layout = "clustering.jsonl", "labelled"
    metadata = TaskMetadata(
        name="L2VRealFortuneClustering",
        description="Quotations from eight topical fortune files (computers, politics, science, art, startrek, "
                    "law, food, sports), clustered by k-means (V-measure).",
        type="Clustering",
        main_score="v_measure",
        prompt="Identify the topic or theme of the given quotation",
        task_subtypes=["Thematic clustering"],
        domains=["Fiction", "Written"],
        license="bsd-3-clause",
        **_COMMON,
    )
    max_fraction_of_documents_to_embed = None  # all 400 quotations
    max_documents_per_cluster = 400


class L2VRealQuoteCompletion(_Real, AbsTaskRetrieval):
    data_file, layout = "reranking", "retrieval"
    metadata = TaskMetadata(
        name="L2VRealQuoteCompletion",
        description="The first half of a quotation (cut at the punctuation nearest its middle) against ten "
                    "candidate second halves, one of them its own.",
        type="Reranking",
        main_score="map_at_1000",
        prompt={"query": "Given the beginning of a quotation, retrieve its continuation"},
        task_subtypes=[],
        domains=["Fiction", "Written"],
        license="bsd-3-clause",
        **_COMMON,
    )


REAL_TASKS: tuple[type, ...] = (
    L2VRealPackageRetrieval,
    L2VRealQuotePairs,
    L2VRealPackageSection,
    L2VRealFortuneClustering,
    L2VRealQuoteCompletion,
)
REAL_TASK_NAMES: tuple[str, ...] = tuple(cls.metadata.name for cls in REAL_TASKS)


def real_tasks() -> list:
    """Fresh instances of every task in the suite."""
    return [cls() for cls in REAL_TASKS]
