"""One folder of the embedding cache: the chunk files of one model, settings and instruction, indexed."""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from l2v_core.distributed import world

from .chunks import SUFFIX, CorruptChunk, read_chunk, read_chunk_keys, text_keys, write_chunk

logger = logging.getLogger(__name__)


def _prefixes(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys[:, :8]).view("<u8").ravel()


class ChunkStore:
    """The vectors of one model, settings and instruction: a folder of chunk files.

    The index is sorted 64-bit key prefixes (about 16 bytes per text, so an 8.8M-text corpus
    indexes in ~140 MB); the full 32-byte key is compared when a vector is served.
    Implements mteb's ``CacheBackendProtocol`` (``add``, ``get_vector``, ``save``, ``load``, ...).
    """

    def __init__(self, directory: str | os.PathLike, writer: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        rank = world()[0]
        self.writer = writer or f"r{rank:05d}-{uuid.uuid4().hex[:10]}"
        self.dim: int | None = None
        self._seq = 0
        self._paths: list[Path] = []
        self._seen: set[str] = set()
        self._prefix = np.empty(0, dtype=np.uint64)
        self._file = np.empty(0, dtype=np.int64)
        self._row = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, int]] = []
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None

    # --- index
    def refresh(self) -> None:
        """Index chunk files written since the last look (by this or any other process)."""
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            try:
                keys, width = read_chunk_keys(path)
            except FileNotFoundError:
                continue
            except CorruptChunk as err:
                self._discard(path, str(err))
                continue
            if self.dim is not None and width != self.dim:
                self._discard(path, f"vectors of width {width} where the others have {self.dim}")
                continue
            self.dim = width
            self._register(path, keys)

    def _register(self, path: Path, keys: np.ndarray) -> None:
        self._paths.append(path)
        self._pending.append((_prefixes(keys), len(self._paths) - 1))

    def _merge(self) -> None:
        if not self._pending:
            return
        prefix = np.concatenate([self._prefix, *(p for p, _ in self._pending)])
        files = np.concatenate([self._file, *(np.full(len(p), fid) for p, fid in self._pending)])
        rows = np.concatenate([self._row, *(np.arange(len(p)) for p, _ in self._pending)])
        order = np.argsort(prefix, kind="stable")
        self._prefix, self._file, self._row = prefix[order], files[order], rows[order]
        self._pending = []

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file id, row) of each key in the index, -1 where absent."""
        self._merge()
        if not len(self._prefix):
            missing = np.full(len(keys), -1, dtype=np.int64)
            return missing, missing.copy()
        query = _prefixes(keys)
        pos = np.minimum(np.searchsorted(self._prefix, query), len(self._prefix) - 1)
        hit = self._prefix[pos] == query
        return np.where(hit, self._file[pos], -1), np.where(hit, self._row[pos], -1)

    def _chunk(self, fid: int) -> tuple[np.ndarray, np.ndarray]:
        if self._last is None or self._last[0] != fid:
            self._last = (fid, *read_chunk(self._paths[fid]))
        return self._last[1], self._last[2]

    def read(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(found mask, (n, dim) vectors or None when nothing was found). Unreadable chunks are
        dropped (their texts count as not found); a vector is served only under its full key."""
        self.refresh()
        files, rows = self.locate(keys)
        found = np.zeros(len(keys), dtype=bool)
        if not (files >= 0).any():
            return found, None
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for fid in np.unique(files[files >= 0]):
            which = np.flatnonzero(files == fid)
            try:
                chunk_keys, vectors = self._chunk(int(fid))
            except (CorruptChunk, FileNotFoundError) as err:
                self._discard(self._paths[fid], str(err) if isinstance(err, CorruptChunk) else "deleted")
                self._drop(int(fid))
                continue
            at = rows[which]
            # Prefixes can collide (rarely): such a text is encoded again rather than served wrongly.
            same = (chunk_keys[at] == keys[which]).all(axis=1)
            out[which[same]] = vectors[at[same]]
            found[which[same]] = True
        return found, out

    def _drop(self, fid: int) -> None:
        keep = self._file != fid
        self._prefix, self._file, self._row = self._prefix[keep], self._file[keep], self._row[keep]
        self._last = None

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("Embedding cache file %s is unusable (%s): deleted, its texts will be encoded again",
                       path, reason)
        path.unlink(missing_ok=True)

    # --- writing
    def append(self, keys: np.ndarray, vectors: np.ndarray) -> Path | None:
        """Write one chunk file (atomically) and index it."""
        if not len(keys):
            return None
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), -1)
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"{self.directory} holds vectors of width {self.dim}, got {vectors.shape[1]}")
        path = self.directory / f"{self.writer}-{self._seq:06d}{SUFFIX}"
        self._seq += 1
        write_chunk(path, keys, vectors)
        self._seen.add(path.name)
        self.dim = vectors.shape[1]
        self._register(path, keys)
        return path

    # --- mteb's CacheBackendProtocol
    def add(self, items: list[dict[str, Any]], vectors) -> None:
        self.append(text_keys([item["text"] for item in items]), np.asarray(vectors))

    def get_vector(self, item: dict[str, Any]) -> np.ndarray | None:
        found, vectors = self.read(text_keys([item["text"]]))
        return vectors[0] if found[0] else None

    def __contains__(self, item: dict[str, Any]) -> bool:
        self.refresh()
        return bool(self.locate(text_keys([item["text"]]))[0][0] >= 0)

    def save(self) -> None:
        """Nothing to do: every ``add`` is already a finished file on disk."""

    def load(self) -> None:
        self.refresh()

    def close(self) -> None:
        self._last = None
