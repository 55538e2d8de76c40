"""The tidy results table: one row per model × task × split × subset × metric (× layer).

mteb's JSON results stay the source of truth for MTEB tasks (under
``<output>/results/...``, written by mteb's ``ResultCache``); this table flattens them,
adds timing and provenance, and also holds probe results (``layer`` set) and failure
rows (``status`` not ``ok``, with the error). It is written to ``scores.parquet`` and
``scores.csv`` under the output folder, each atomically (temporary file, then
``os.replace``), after every task, so an interrupted run loses at most one task.

Several runs (or processes) may write one folder at once: every read-modify-write of the
table holds a file lock (``.scores.lock``), so no run loses another's rows. Rows on disk
are never dropped: without ``scores.parquet`` the table is rebuilt from ``scores.csv``,
and a file that cannot be read stops the write with an error instead of being replaced.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from l2v_core.files import atomic_write, check_writable_dir

logger = logging.getLogger(__name__)

PARQUET_NAME = "scores.parquet"
CSV_NAME = "scores.csv"
LOCK_NAME = ".scores.lock"
# A writer holds the lock for one read-merge-write of the table (well under a second for
# ordinary tables); waiting this long means another process hangs while holding it.
LOCK_TIMEOUT_S = 600.0

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
    "ci_low": "float64",  # 95% bootstrap interval of a main score over the task's test units (l2v_eval.intervals)
    "ci_high": "float64",
    "ci_resamples": "Int64",
    "ci_seed": "Int64",
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
# One evaluated model: a model at a revision with one set of encoder settings.
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


def merge_rows(current: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``current`` with ``new`` added, replacing rows with the same key. Successful rows of a task
    also clear that task's earlier failure rows for the same model."""
    if current.empty:
        return new
    drop = _keys(current).isin(set(_keys(new)))
    succeeded = new.loc[new["status"] == OK, ["model", "model_revision", "experiment", "task"]].drop_duplicates()
    if not succeeded.empty:
        marked = current.merge(succeeded.assign(_clear=True), how="left",
                               on=["model", "model_revision", "experiment", "task"])["_clear"]
        drop |= marked.fillna(False).astype(bool).to_numpy() & (current["status"] != OK).to_numpy()
    return pd.concat([current.loc[~drop], new], ignore_index=True)


class ResultsTableError(ValueError):
    """A results table on disk cannot be read (it is left untouched), or its lock cannot be had."""


class DamagedTable(ValueError):
    """A table that reads but whose rows were cut or damaged (a partial last line, a row without its
    model, task or status, a task without its main score)."""


# Every row names these; a row cut short (a killed write, a truncated copy) lacks the last one.
REQUIRED = ("model", "task", "status")
# One mteb result (or probe layer) of one model; each has its main-score row.
RESULT_KEY = ["model", "model_revision", "experiment", "task", "split", "subset", "layer"]


def check_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` if every row is complete and every successful result has its main score, else
    :class:`DamagedTable` naming the first bad row (numbered from 1, as the data rows of the CSV)."""
    for column in REQUIRED:
        bad = frame[column].isna() | (frame[column].astype("string").str.strip() == "")
        if bad.any():
            raise DamagedTable(f"row {int(bad.to_numpy().argmax()) + 1} has no {column} (a cut or damaged row)")
    ok = frame["status"] == OK
    bad = ok & (frame["metric"] == "")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DamagedTable(f"row {row + 1} (task {frame['task'].iloc[row]}) has no metric")
    mains = frame.loc[ok, RESULT_KEY + ["is_main_score"]].astype({"layer": "string"}).fillna({"layer": ""})
    flags = mains.assign(flagged=mains["is_main_score"].notna(), main=mains["is_main_score"].fillna(False))
    groups = flags.groupby(RESULT_KEY, dropna=False)[["flagged", "main"]].any()
    lost = groups["flagged"] & ~groups["main"]  # results l2v wrote always flag their main score
    if lost.any():
        model, _, _, task, split, subset, _ = lost.index[int(lost.to_numpy().argmax())]
        raise DamagedTable(f"task {task} ({split}/{subset}) of {model} has rows but not its main score (rows lost)")
    return frame


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    return check_rows(to_frame(pd.read_parquet(path).to_dict("records")))


def _last_byte(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - 1, 0))
        return f.read(1)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    if _last_byte(path) not in (b"\n", b""):  # pandas writes a line break after every row
        raise DamagedTable("its last line is cut (the file does not end with a line break)")
    return check_rows(to_frame(pd.read_csv(path, keep_default_na=False, na_values=[""]).to_dict("records")))


def _read_table(path: Path, read, what_to_do: str) -> pd.DataFrame:
    try:
        return read(path)
    except DamagedTable as err:
        raise ResultsTableError(f"{str(path)!r} cannot be read: {err}; it was left as it is and nothing was written. "
                                f"{what_to_do}") from None
    except Exception as err:  # pyarrow, pandas and OS errors all mean the same here
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise ResultsTableError(f"{str(path)!r} cannot be read ({type(err).__name__}: {reason}); it was left as it "
                                f"is and nothing was written. {what_to_do}") from err


def _is_writer() -> bool:
    from l2v_core.distributed import world

    return world()[0] == 0  # under torchrun every rank computes the same rows; rank 0 alone writes


class ResultsStore:
    """The tidy table under one output folder."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.parquet_path = self.output_dir / PARQUET_NAME
        self.csv_path = self.output_dir / CSV_NAME
        self.lock_path = self.output_dir / LOCK_NAME

    def load(self) -> pd.DataFrame:
        """The table: ``scores.parquet``, else ``scores.csv``, else empty. A file that exists but cannot
        be read raises ``ResultsTableError`` (never an empty table that a write would then save)."""
        mteb_json = self.output_dir / "mteb" / "results"  # where the harness keeps mteb's result cache
        if self.parquet_path.is_file():
            hint = (f"Move it aside to rebuild the table from {str(self.csv_path)!r}" if self.csv_path.is_file()
                    else f"Move it aside to rebuild the table (re-running rebuilds the rows of MTEB tasks from "
                         f"mteb's JSON under {str(mteb_json)!r} without re-encoding)")
            return _read_table(self.parquet_path, read_parquet, hint)
        if self.csv_path.is_file():
            return _read_table(self.csv_path, read_csv, "Repair or move it aside (re-running rebuilds the rows of "
                                                        f"MTEB tasks from mteb's JSON under {str(mteb_json)!r})")
        return empty_frame()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's table lock (for one read-modify-write)."""
        from filelock import FileLock, Timeout

        self.output_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.lock_path, timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout:
            raise ResultsTableError(f"Waited {LOCK_TIMEOUT_S:.0f} s for {str(self.lock_path)!r}: another process "
                                    "writing this results folder holds it; stop that process or use another "
                                    "--output") from None
        try:
            yield
        finally:
            lock.release()

    def _write_unlocked(self, frame: pd.DataFrame) -> None:
        frame = frame.sort_values(["model", "model_revision", "experiment", "task", "split", "subset", "layer",
                                   "metric"], na_position="first", kind="stable").reset_index(drop=True)
        for name in (PARQUET_NAME, CSV_NAME):  # under the lock no write is under way: these are a killed one's
            for stale in self.output_dir.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
        for path, save in ((self.parquet_path, lambda p: frame.to_parquet(p, index=False)),
                           (self.csv_path, lambda p: frame.to_csv(p, index=False))):
            try:
                atomic_write(path, save)
            except OSError as err:
                raise ResultsTableError(f"Could not write {str(path)!r} ({err.strerror or err}); the file on disk was left "
                                        "as it was. Fix that and re-run: finished tasks are skipped") from None

    def write(self, frame: pd.DataFrame) -> None:
        """Replace the whole table."""
        if not _is_writer():
            return
        with self.locked():
            self._write_unlocked(frame)

    def upsert(self, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Add rows, replacing rows with the same key (see ``merge_rows``), under the folder's lock so
        concurrent writers never lose each other's rows."""
        new = to_frame(rows)
        if new.empty:
            return self.load()
        if not _is_writer():
            return merge_rows(self.load(), new)
        with self.locked():
            if not self.parquet_path.exists() and self.csv_path.is_file():
                logger.warning("%s is missing; rebuilding it from %s", self.parquet_path, self.csv_path)
            frame = merge_rows(self.load(), new)
            self._write_unlocked(frame)
        return frame

    def completed(self, model: str, model_revision: str, experiment: str, task: str) -> pd.DataFrame:
        """The successful rows already stored for one model and task."""
        frame = self.load()
        mask = ((frame["model"] == model) & (frame["model_revision"] == model_revision)
                & (frame["experiment"] == experiment) & (frame["task"] == task) & (frame["status"] == OK))
        return frame.loc[mask.fillna(False)]


def check_output(output_dir: str | os.PathLike) -> None:
    """Before a run loads its model: the output folder must be writable and its table (if any) readable."""
    check_writable_dir(output_dir, "--output")
    ResultsStore(output_dir).load()


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """The tidy table from a results folder (or a scores.parquet / scores.csv file itself)."""
    path = Path(path)
    if path.is_dir():
        if not (path / PARQUET_NAME).is_file() and not (path / CSV_NAME).is_file():
            raise FileNotFoundError(f"No {PARQUET_NAME} or {CSV_NAME} in {str(path)!r}; run l2v-eval with --output there")
        return ResultsStore(path).load()
    if path.suffix == ".parquet":
        return _read_table(path, read_parquet, "Read the folder's scores.csv instead, or re-run l2v-eval")
    if path.suffix == ".csv":
        return _read_table(path, read_csv, "Read the folder's scores.parquet instead, or re-run l2v-eval")
    raise ValueError(f"Expected a results folder, a .parquet or a .csv file, got {str(path)!r}")


# JSON Lines, not a .json file: mteb reads every *.json beside model_meta.json as a task result.
INSTRUCTIONS_NAME = "instructions.jsonl"


def record_instructions(folder: str | os.PathLike, task: str, used: Mapping[str, str]) -> Path:
    """Keep the exact instruction strings a task's texts got in ``instructions.jsonl`` beside mteb's result
    files of the model: one line per task, ``{"task": ..., "instructions": {role: instruction}}`` (roles
    ``query`` / ``document`` for retrieval-like tasks, ``text`` for the others), replaced when the task runs
    again."""
    import json

    path = Path(folder) / INSTRUCTIONS_NAME
    recorded: dict[str, Any] = {}
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
                recorded[entry["task"]] = entry["instructions"]
            except (ValueError, KeyError, TypeError):
                logger.warning("%s line %d is not a recorded instruction; it is dropped", path, number)
    recorded[task] = dict(used)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"task": name, "instructions": recorded[name]}, ensure_ascii=False) + "\n"
                   for name in sorted(recorded))
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return path
