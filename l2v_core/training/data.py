"""Training data from local files, as memory-mapped ``datasets`` tables for the trainers.

Nothing is downloaded: data is a plain-text file (one text per line, blank lines
skipped) or JSONL, either one optionally gzip-compressed (``.txt.gz``, ``.jsonl.gz``).
Each row is checked as it is read; a bad row fails with the file and line named.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

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


def _check_file(path: str) -> None:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"Training data file not found: {path!r}")
    if not os.path.isfile(path):
        raise DataError(f"Training data path is not a file: {path!r}")


def _open_lines(path: str):
    """(line number, line) of a text file, gzip-decompressed when its name ends in ``.gz``."""
    path = os.fspath(path)
    _check_file(path)
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


def _clean(path: str, number: int, value: str, key: str) -> str:
    """A text as training uses it; a lone surrogate (valid JSON escape, not text) is refused, as ``encode`` does."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{path}, line {number}: {key!r} holds a lone surrogate ({value[:40]!r}...), "
                        "which is not text; fix the escape in that row") from None
    return value.strip()


def _texts(path: str, text_field: str, names: tuple[str, ...]):
    if _is_jsonl(path):
        for number, row in _json_rows(path):
            value = row.get(text_field)
            if not isinstance(value, str):
                keys = ", ".join(sorted(row)) or "none"
                raise DataError(f"{path}, line {number}: needs a string under {text_field!r} (keys found: {keys})")
            if value.strip():
                text = _clean(path, number, value, text_field)
                yield dict.fromkeys(names, text)
    else:
        for _, line in _open_lines(path):
            if line.strip():
                yield dict.fromkeys(names, line.strip())


def _triples(path: str):
    for number, row in _json_rows(path):
        for key in ("query", "positive", "negative"):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}, line {number}: needs a non-empty string under {key!r}")
        dataset = row.get("dataset", "")
        if not isinstance(dataset, str):
            raise DataError(f"{path}, line {number}: 'dataset' must be a string")
        yield {"query": _clean(path, number, row["query"], "query"),
               "positive": _clean(path, number, row["positive"], "positive"),
               "negative": _clean(path, number, row["negative"], "negative"), "dataset": dataset}


def _arrow(generator, path: str, cache_dir: str | None, columns: tuple[str, ...], **kwargs):
    """The rows of ``generator(path, ...)`` as a ``datasets.Dataset``: written to Arrow files in ``cache_dir``
    and memory-mapped, so memory stays flat however large the file is. The file's size and modification
    time are part of the cache key: an edited file is read again."""
    import datasets

    stat = os.stat(path)
    signature = {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def rows(path: str, signature: dict, **kwargs):
        yield from generator(path, **kwargs)

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        features = datasets.Features({c: datasets.Value("string") for c in columns})
        dataset = datasets.Dataset.from_generator(rows, gen_kwargs={"path": path, "signature": signature, **kwargs},
                                                  cache_dir=cache_dir, features=features)
    except ValueError as err:
        if "corresponds to no data" in str(err):  # the generator yielded no row: datasets cannot build an empty table
            return None
        raise
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        if isinstance(cause, DataError):
            raise cause from None
        raise
    finally:
        if was:
            datasets.enable_progress_bars()
    return dataset


def load_texts(path: str, text_field: str = "text", columns: tuple[str, ...] = ("text",),
               cache_dir: str | None = None):
    """Texts of a .txt file (one per line) or a .jsonl file (``text_field`` of each object), or of the same
    gzipped, as a memory-mapped ``datasets.Dataset`` with each text under every name in ``columns``."""
    _check_file(path)
    dataset = _arrow(_texts, path, cache_dir, columns, text_field=text_field, names=columns)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"{path} holds no texts (blank lines are skipped)")
    return dataset


def load_triples(path: str, cache_dir: str | None = None):
    """Rows ``{"query", "positive", "negative", "dataset"?}`` of a JSONL file, as a memory-mapped dataset."""
    if not _is_jsonl(path):
        raise DataError(f"Supervised data must be JSONL with keys query, positive, negative; got {path!r}")
    _check_file(path)
    dataset = _arrow(_triples, path, cache_dir, ("query", "positive", "negative", "dataset"))
    if dataset is None or len(dataset) == 0:
        raise DataError(f"{path} holds no rows")
    return dataset
