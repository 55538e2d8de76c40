"""The tidy results table: one row per model × task × split × subset × metric (× layer).

mteb's JSON results stay the source of truth for MTEB tasks (under
``<output>/results/...``, written by mteb's ``ResultCache``); this table flattens them,
adds timing and provenance, and also holds probe results (``layer`` set) and failure
rows (``status`` not ``ok``, with the error). It is written to ``scores.parquet`` and
``scores.csv`` under the output folder, each atomically (temporary file, then
``os.replace``), after every task, so an interrupted run loses at most one task.
"""
from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from l2v_core.files import atomic_write

PARQUET_NAME = "scores.parquet"
CSV_NAME = "scores.csv"

COLUMNS = {
    "model": "string",
    "model_revision": "string",
    "experiment": "string",
    "task": "string",
    "task_type": "string",
    "split": "string",
    "subset": "string",
    "languages": "string",
    "metric": "string",
    "value": "float64",
    "is_main_score": "boolean",
    "layer": "Int64",
    "n_samples": "Int64",
    "eval_seconds": "float64",
    "status": "string",
    "error": "string",
    "l2v_version": "string",
    "mteb_version": "string",
    "created_at": "string",
}
# A row is identified by these; rewriting a key replaces the old row.
KEY = ("model", "model_revision", "experiment", "task", "split", "subset", "layer", "metric")
MODEL_KEY = ("model", "model_revision", "experiment")
OK = "ok"


def l2v_version() -> str:
    try:
        return metadata.version("l2v")
    except metadata.PackageNotFoundError:
        from l2v_core import __version__

        return __version__


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows → a frame with exactly the table's columns and dtypes (missing columns empty)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return empty_frame()
    unknown = set(frame.columns) - set(COLUMNS)
    if unknown:
        raise ValueError(f"Unknown result columns {sorted(unknown)}; the table has {list(COLUMNS)}")
    for column, dtype in COLUMNS.items():
        if column not in frame:
            frame[column] = None
        if column in ("split", "subset", "experiment", "metric", "error", "languages"):
            frame[column] = frame[column].astype("string").fillna("")
        frame[column] = frame[column].astype(dtype)
    return frame[list(COLUMNS)]


def _flatten(scores: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """Numeric metrics of one mteb scores entry; nested dicts become ``outer.inner``, lists are skipped
    (per-experiment values stay in mteb's JSON)."""
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            if not math.isnan(value):  # undefined for this task (e.g. AP of a multi-class task)
                yield name, float(value)
        elif isinstance(value, Mapping):
            yield from _flatten(value, prefix=f"{name}.")


_NOT_METRICS = {"hf_subset", "languages", "main_score", "mteb_version"}


def rows_from_task_result(task_result, task_metadata, *, model: str, model_revision: str, experiment: str = "",
                          n_samples: Mapping[tuple[str, str], int | None] | None = None,
                          created_at: str | None = None) -> list[dict[str, Any]]:
    """Tidy rows of an mteb ``TaskResult`` (every split, subset and numeric metric).

    ``task_metadata`` comes from the task object (``TaskResult.task`` looks tasks up in mteb's
    registry, which does not hold local tasks such as l2v-mini)."""
    import mteb

    task_type = task_metadata.type
    main_metric = task_metadata.main_score
    created_at = created_at or now()
    common = {
        "model": model,
        "model_revision": model_revision,
        "experiment": experiment,
        "task": task_result.task_name,
        "task_type": task_type,
        "eval_seconds": task_result.evaluation_time,
        "status": OK,
        "l2v_version": l2v_version(),
        "mteb_version": task_result.mteb_version or mteb.__version__,
        "created_at": created_at,
    }
    rows = []
    for split, entries in task_result.scores.items():
        for entry in entries:
            subset = entry.get("hf_subset", "default")
            base = {
                **common,
                "split": split,
                "subset": subset,
                "languages": ",".join(entry.get("languages") or []),
                "n_samples": (n_samples or {}).get((split, subset)),
            }
            metrics = dict(_flatten({k: v for k, v in entry.items() if k not in _NOT_METRICS}))
            if main_metric not in metrics and "main_score" in entry:
                metrics[main_metric] = float(entry["main_score"])
            for metric, value in metrics.items():
                rows.append({**base, "metric": metric, "value": value, "is_main_score": metric == main_metric})
    return rows


def failure_row(*, model: str, model_revision: str, experiment: str, task: str, task_type: str | None,
                status: str, error: str, eval_seconds: float | None = None) -> dict[str, Any]:
    return {
        "model": model,
        "model_revision": model_revision,
        "experiment": experiment,
        "task": task,
        "task_type": task_type,
        "split": "",
        "subset": "",
        "metric": "",
        "value": math.nan,
        "is_main_score": False,
        "eval_seconds": eval_seconds,
        "status": status,
        "error": error,
        "l2v_version": l2v_version(),
        "created_at": now(),
    }


def _keys(frame: pd.DataFrame) -> pd.Series:
    parts = [frame[c].astype("string").fillna("<NA>") for c in KEY]
    out = parts[0]
    for part in parts[1:]:
        out = out + "\x1f" + part
    return out


class ResultsStore:
    """The tidy table under one output folder."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.parquet_path = self.output_dir / PARQUET_NAME
        self.csv_path = self.output_dir / CSV_NAME

    def load(self) -> pd.DataFrame:
        if self.parquet_path.is_file():
            return to_frame(pd.read_parquet(self.parquet_path).to_dict("records"))
        return empty_frame()

    def write(self, frame: pd.DataFrame) -> None:
        from l2v_core.distributed import world

        if world()[0] != 0:  # under torchrun every rank computes the same rows; rank 0 alone writes
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        frame = frame.sort_values(["model", "model_revision", "experiment", "task", "split", "subset", "layer",
                                   "metric"], na_position="first", kind="stable").reset_index(drop=True)
        atomic_write(self.parquet_path, lambda p: frame.to_parquet(p, index=False))
        atomic_write(self.csv_path, lambda p: frame.to_csv(p, index=False))

    def upsert(self, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Add rows, replacing rows with the same key. Successful rows of a task also clear that
        task's earlier failure rows for the same model."""
        new = to_frame(rows)
        if new.empty:
            return self.load()
        current = self.load()
        drop = _keys(current).isin(set(_keys(new)))
        succeeded = new.loc[new["status"] == OK, ["model", "model_revision", "experiment", "task"]].drop_duplicates()
        if not succeeded.empty and not current.empty:
            marked = current.merge(succeeded.assign(_clear=True), how="left",
                                   on=["model", "model_revision", "experiment", "task"])["_clear"]
            drop |= marked.fillna(False).astype(bool).to_numpy() & (current["status"] != OK).to_numpy()
        frame = pd.concat([current.loc[~drop], new], ignore_index=True) if not current.empty else new
        self.write(frame)
        return frame

    def completed(self, model: str, model_revision: str, experiment: str, task: str) -> pd.DataFrame:
        """The successful rows already stored for one model and task."""
        frame = self.load()
        mask = ((frame["model"] == model) & (frame["model_revision"] == model_revision)
                & (frame["experiment"] == experiment) & (frame["task"] == task) & (frame["status"] == OK))
        return frame.loc[mask.fillna(False)]


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """The tidy table from a results folder (or a scores.parquet / scores.csv file itself)."""
    path = Path(path)
    if path.is_dir():
        if (path / PARQUET_NAME).is_file():
            return ResultsStore(path).load()
        if (path / CSV_NAME).is_file():
            path = path / CSV_NAME
        else:
            raise FileNotFoundError(f"No {PARQUET_NAME} or {CSV_NAME} in {str(path)!r}; run l2v-eval with --output there")
    if path.suffix == ".parquet":
        return to_frame(pd.read_parquet(path).to_dict("records"))
    if path.suffix == ".csv":
        return to_frame(pd.read_csv(path, keep_default_na=False, na_values=[""]).to_dict("records"))
    raise ValueError(f"Expected a results folder, a .parquet or a .csv file, got {str(path)!r}")
