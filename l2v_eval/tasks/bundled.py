"""Data loading shared by the bundled suites (``l2v-mini``, ``l2v-real``).

A bundled task is an ordinary mteb task whose ``load_data`` reads JSONL files shipped next to
its module instead of downloading from the Hugging Face Hub; mteb's evaluators do the rest.
Each task class names its files and its layout (``layout``):

* ``sts``: rows ``sentence1, sentence2, score``, one ``test`` split;
* ``pairs``: rows ``sentence1, sentence2, label`` (0/1), one ``test`` split;
* ``labelled``: rows ``text, label[, split]``; with a ``split`` field the rows form the
  ``train`` and ``test`` splits (classification), without it one ``test`` split
  (clustering, column ``sentences``);
* ``retrieval``: ``<prefix>_corpus/_queries/_qrels.jsonl`` (+ ``_top_ranked.jsonl`` for reranking).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, DatasetDict
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData


def suite_data_roots() -> dict[str, Path]:
    """Each bundled suite's folder by suite name: what a training config's ``l2v-real:train/pairs.jsonl.gz``
    names (the suites' training splits live beside their test data)."""
    from .suites import SUITES

    return {name: suite.folder for name, suite in SUITES.items() if suite.folder is not None}


@lru_cache(maxsize=None)
def read_jsonl(path: Path) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


class BundledTask:
    """Mixin placed before an mteb task class: ``load_data`` from files in ``data_dir``."""

    data_dir: ClassVar[Path]
    data_file: ClassVar[str]
    """A ``.jsonl`` file, or for ``retrieval`` the prefix of its four files."""
    layout: ClassVar[str]

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = getattr(self, f"_load_{self.layout}")()
        self.data_loaded = True

    def _rows(self, name: str | None = None) -> list[dict]:
        return list(read_jsonl(self.data_dir / (name or self.data_file)))

    def _load_sts(self) -> DatasetDict:
        return DatasetDict({"test": Dataset.from_list(self._rows())})

    def _load_pairs(self) -> DatasetDict:
        rows = self._rows()
        return DatasetDict({"test": Dataset.from_dict({
            "sentence1": [r["sentence1"] for r in rows],
            "sentence2": [r["sentence2"] for r in rows],
            "labels": [r["label"] for r in rows],
        })})

    def _load_labelled(self) -> DatasetDict:
        rows = self._rows()
        labels = sorted({r["label"] for r in rows})
        if "split" not in rows[0]:
            return DatasetDict({"test": Dataset.from_dict(
                {"sentences": [r["text"] for r in rows], "labels": [labels.index(r["label"]) for r in rows]})})
        splits = {}
        for split in ("train", "test"):
            chosen = [r for r in rows if r["split"] == split]
            splits[split] = Dataset.from_dict(
                {"text": [r["text"] for r in chosen], "label": [labels.index(r["label"]) for r in chosen]})
        return DatasetDict(splits)

    def _load_retrieval(self) -> dict:
        prefix = self.data_file
        relevant: dict[str, dict[str, int]] = {}
        for r in self._rows(f"{prefix}_qrels.jsonl"):
            relevant.setdefault(r["query_id"], {})[r["doc_id"]] = int(r["score"])
        top_ranked = None
        if (self.data_dir / f"{prefix}_top_ranked.jsonl").is_file():
            top_ranked = {r["query_id"]: list(r["doc_ids"]) for r in self._rows(f"{prefix}_top_ranked.jsonl")}
        split = RetrievalSplitData(
            corpus=Dataset.from_list(self._rows(f"{prefix}_corpus.jsonl")),
            queries=Dataset.from_list(self._rows(f"{prefix}_queries.jsonl")),
            relevant_docs=relevant,
            top_ranked=top_ranked,
        )
        return {"default": {"test": split}}
