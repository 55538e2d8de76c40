"""Training data from local files, and a data order that is a pure function of (seed, step).

Nothing is downloaded: data is a plain-text file (one text per line, blank lines
skipped) or JSONL, either one optionally gzip-compressed (``.txt.gz``, ``.jsonl.gz``).
Because the batch of every step is computed from the seed and the step number alone,
a resumed run sees exactly the batches the uninterrupted run would have seen, with
no sampler state to save.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class DataError(ValueError):
    """Training data is missing or malformed; the message names the file and line."""


def sample_path(name: str) -> str:
    """Path of a data or config file shipped in ``l2v_core/training/samples``."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_file()))
        raise FileNotFoundError(f"No sample named {name!r}; available: {available}")
    return str(path)


def _open_lines(path: str):
    """(line number, line) of a text file, gzip-decompressed when its name ends in ``.gz``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"Training data file not found: {path!r}")
    if not os.path.isfile(path):
        raise DataError(f"Training data path is not a file: {path!r}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        try:
            for number, line in enumerate(f, start=1):
                yield number, line
        except UnicodeDecodeError as err:
            raise DataError(f"{path} is not UTF-8 text: {err}") from err
        except (OSError, EOFError, zlib.error) as err:  # not gzip, or cut short
            raise DataError(f"{path} is not a complete gzip file: {err}") from err


def _is_jsonl(path: str) -> bool:
    return os.fspath(path).removesuffix(".gz").endswith((".jsonl", ".json"))


def _json_rows(path: str):
    for number, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def load_texts(path: str, text_field: str = "text") -> list[str]:
    """Texts of a .txt file (one per line) or a .jsonl file (``text_field`` of each object), or of the same gzipped."""
    texts: list[str] = []
    if _is_jsonl(path):
        for number, row in _json_rows(path):
            value = row.get(text_field)
            if not isinstance(value, str):
                keys = ", ".join(sorted(row)) or "none"
                raise DataError(f"{path}, line {number}: needs a string under {text_field!r} (keys found: {keys})")
            if value.strip():
                texts.append(value.strip())
    else:
        texts = [line.strip() for _, line in _open_lines(path) if line.strip()]
    if not texts:
        raise DataError(f"{path} holds no texts (blank lines are skipped)")
    return texts


@dataclass(frozen=True)
class Triple:
    query: str
    positive: str
    negative: str
    dataset: str = ""


def load_triples(path: str) -> list[Triple]:
    """Rows ``{"query", "positive", "negative", "dataset"?}`` of a JSONL file."""
    if not _is_jsonl(path):
        raise DataError(f"Supervised data must be JSONL with keys query, positive, negative; got {path!r}")
    triples = []
    for number, row in _json_rows(path):
        for key in ("query", "positive", "negative"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}, line {number}: needs a non-empty string under {key!r}")
        dataset = row.get("dataset", "")
        if not isinstance(dataset, str):
            raise DataError(f"{path}, line {number}: 'dataset' must be a string")
        triples.append(Triple(row["query"].strip(), row["positive"].strip(), row["negative"].strip(), dataset))
    if not triples:
        raise DataError(f"{path} holds no rows")
    return triples


class BatchSchedule:
    """Which items form global batch number ``b`` (counting from 0 over the whole run).

    Each epoch is a permutation drawn from a generator seeded with ``seed`` and the
    epoch number; incomplete batches are dropped so every process always gets the
    same number of items (which cross-device gathering needs). With ``groups``
    (a group label per item), every batch is drawn from a single group.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, groups: list[str] | None = None):
        self.global_batch = global_batch
        self.seed = seed
        self.num_items = num_items
        self.groups: dict[str, list[int]] = {}
        if groups is not None:
            for i, g in enumerate(groups):
                self.groups.setdefault(g, []).append(i)
            self.per_epoch = sum(len(ids) // global_batch for ids in self.groups.values())
        else:
            self.per_epoch = num_items // global_batch
        if self.per_epoch == 0:
            what = "every dataset has" if groups is not None else "the data has"
            raise DataError(
                f"Not one full batch: {what} fewer than {global_batch} items "
                f"(batch_size x processes, or global_batch_size); got {num_items} items"
                + (f" in groups of {sorted(len(v) for v in self.groups.values())}" if groups is not None else "")
                + ". Lower batch_size or add data."
            )
        self._epoch = -1
        self._order: list[list[int]] = []

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + epoch)

    def _batches_of_epoch(self, epoch: int) -> list[list[int]]:
        gen = self._generator(epoch)
        if not self.groups:
            perm = torch.randperm(self.num_items, generator=gen).tolist()
            return [perm[k * self.global_batch:(k + 1) * self.global_batch] for k in range(self.per_epoch)]
        batches = []
        for name in sorted(self.groups):
            ids = self.groups[name]
            perm = [ids[j] for j in torch.randperm(len(ids), generator=gen).tolist()]
            batches += [perm[k * self.global_batch:(k + 1) * self.global_batch] for k in range(len(ids) // self.global_batch)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[k] for k in order]

    def batch(self, index: int) -> list[int]:
        epoch, k = divmod(index, self.per_epoch)
        if epoch != self._epoch:
            self._order, self._epoch = self._batches_of_epoch(epoch), epoch
        return self._order[k]

    def local_batch(self, index: int, rank: int, num_processes: int) -> list[int]:
        """This process's share of global batch ``index``."""
        items = self.batch(index)
        per = len(items) // num_processes
        return items[rank * per:(rank + 1) * per]
