"""How many samples (texts or pairs) a task scores, per split and subset: for the tidy table's
``n_samples`` and for the size of a task's progress bar.

Counted from a loaded task's data as mteb's statistics count them, else read from the statistics
mteb ships with a task (for results read back from mteb's cache without loading the data).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .tasks.local import dataset_source

# Task types whose rows are pairs of texts (two texts encoded per sample).
PAIRED_TYPES = {"STS", "PairClassification", "BitextMining"}


def _split_data(task, split: str, subset: str):
    data = task.dataset
    if subset not in data and subset == "default":
        return data[split]
    return data[subset][split]


def _count(data) -> int | None:
    if isinstance(data, Mapping) and "queries" in data and "corpus" in data:
        return len(data["queries"]) + len(data["corpus"])
    columns = getattr(data, "column_names", None)
    if columns is None:
        return None
    if "sentences" in columns and len(data) and isinstance(data[0]["sentences"], list):
        return sum(len(s) for s in data["sentences"])  # legacy clustering: one row per set of sentences
    return len(data)


def count_samples(task) -> dict[tuple[str, str], int | None]:
    """Texts (or pairs) per (split, subset) in a loaded task, counted as mteb's statistics count them."""
    counts = {}
    for split in task.eval_splits:
        for subset in task.hf_subsets:
            try:
                counts[(split, subset)] = _count(_split_data(task, split, subset))
            except (KeyError, TypeError, IndexError):
                counts[(split, subset)] = None
    return counts


def published_samples(task) -> dict[tuple[str, str], int | None]:
    """Sample counts from the statistics mteb ships with a task, for results read from the cache."""
    counts = {}
    try:
        stats = task.metadata.descriptive_stats or {}
    except Exception:  # tasks without a statistics file
        stats = {}
    for split in task.eval_splits:
        split_stats = stats.get(split) or {}
        per_subset = split_stats.get("hf_subset_descriptive_stats") or {}
        for subset in task.hf_subsets:
            entry = per_subset.get(subset) or (split_stats if len(task.hf_subsets) == 1 else {})
            counts[(split, subset)] = entry.get("num_samples")
    return counts


def counted_from_data(task, data_dir: Path | None) -> dict:
    """Samples per split and subset, from the task's data (loaded for this, ``data_dir`` first, and
    unloaded again if it was not loaded before); empty for an aggregate task, which has no data of its own."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    if isinstance(task, AbsTaskAggregate):
        return {}
    with dataset_source(data_dir, task.metadata.name):
        loaded_here = not task.data_loaded
        if loaded_here:
            task.load_data()
        try:
            return count_samples(task)
        finally:
            if loaded_here:
                task.unload_data()


def expected_texts(task_type: str, n_samples: Mapping[Any, int | None]) -> int | None:
    """About how many texts a task encodes, for its progress bar (which grows if it is more)."""
    counts = [n for n in n_samples.values() if n]
    if not counts:
        return None
    return sum(counts) * (2 if task_type in PAIRED_TYPES else 1)
