"""One chunk file of the embedding cache: the texts' keys and their vectors, self-checking.

Each ``.emb`` file is one chunk written by one process, moved into place atomically: an
88-byte header (magic, rows, width, sha256 of the keys, sha256 of the vectors), the 32-byte
keys, the float32 vectors. A file whose length or checksums do not match raises
:class:`CorruptChunk`; the store deletes it and its texts are encoded again.
"""
from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l2v_core.files import atomic_write

SUFFIX = ".emb"
MAGIC = b"L2VEMB01"
HEADER = struct.Struct("<8sQQ32s32s")  # magic, rows, width, sha256(keys), sha256(vectors)
KEY_BYTES = 32


class CorruptChunk(ValueError):
    """A chunk file whose length, header or checksums are wrong."""


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 32) uint8: the sha256 of each text's UTF-8 bytes.

    This is the key mteb 2.26's own embedding cache gives a text (``hash_item`` in the private
    ``mteb._content_hashes``); it is computed here rather than imported so the files on disk stay
    readable whatever a later mteb does with its private helper.
    """
    keys = np.empty((len(texts), KEY_BYTES), dtype=np.uint8)
    for i, text in enumerate(texts):
        keys[i] = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8)
    return keys


def write_chunk(path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    header = HEADER.pack(MAGIC, len(keys), vectors.shape[1], hashlib.sha256(keys).digest(),
                         hashlib.sha256(vectors).digest())

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(keys.tobytes())
            f.write(vectors.tobytes())
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def _header(path: Path, data: bytes) -> tuple[int, int, bytes, bytes]:
    if len(data) < HEADER.size:
        raise CorruptChunk(f"{len(data)} bytes, shorter than the header")
    magic, rows, width, keys_sha, vectors_sha = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptChunk("not an l2v embedding chunk")
    expected = HEADER.size + rows * KEY_BYTES + rows * width * 4
    size = path.stat().st_size
    if size != expected:
        raise CorruptChunk(f"{size} bytes where the header promises {expected} (truncated or overwritten)")
    return rows, width, keys_sha, vectors_sha


def read_chunk_keys(path: Path) -> tuple[np.ndarray, int]:
    """The keys of a chunk (checked against the length and keys checksum) and its vector width."""
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        rows, width, keys_sha, _ = _header(path, head)
        raw = f.read(rows * KEY_BYTES)
    if hashlib.sha256(raw).digest() != keys_sha:
        raise CorruptChunk("keys checksum mismatch")
    return np.frombuffer(raw, dtype=np.uint8).reshape(rows, KEY_BYTES), width


def read_chunk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys and vectors of a chunk, both checked against their checksums."""
    data = path.read_bytes()
    rows, width, keys_sha, vectors_sha = _header(path, data)
    keys_end = HEADER.size + rows * KEY_BYTES
    keys, vectors = memoryview(data)[HEADER.size:keys_end], memoryview(data)[keys_end:]
    if hashlib.sha256(keys).digest() != keys_sha:
        raise CorruptChunk("keys checksum mismatch")
    if hashlib.sha256(vectors).digest() != vectors_sha:
        raise CorruptChunk("vectors checksum mismatch")
    return (np.frombuffer(keys, dtype=np.uint8).reshape(rows, KEY_BYTES),
            np.frombuffer(vectors, dtype="<f4").reshape(rows, width))
