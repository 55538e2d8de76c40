"""Content digests (sha256) of local model files, remembered per file so only changed files are read again.

A local model's revision is a digest of its files' contents: replacing weights with others of the
same size and restoring the modification time (as tar and zip extraction do) still gives a new
revision. Reading a 7B model's 14 GB on every run would cost seconds, so each file's digest is
remembered under the user's cache folder (``$XDG_CACHE_HOME/l2v/file-hashes``, else
``~/.cache/l2v/file-hashes``), one small JSON file per model file, together with the file's device,
inode, size, modification time and change time. The change time cannot be set back by tools (any
write or ``utime`` updates it), so a digest is reused only while the file is untouched; when any of
the five differs, the file is read again. A file changed in the last 0.1 s is not remembered yet. Entries are written atomically; a deleted, damaged or
unwritable hash folder only means files are read again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from l2v_core.files import write_json

logger = logging.getLogger(__name__)

# Files below this size are read directly: cheaper than looking up (and writing) a remembered digest.
REMEMBER_FROM_BYTES = 4 << 20
# From this size the first read is announced with its measured rate, once per file.
ANNOUNCE_FROM_BYTES = 512 << 20
# File times come from a coarse clock (one kernel tick, 1-10 ms): a file changed this recently could
# change again within the same tick unseen, so its digest is not remembered yet (as git does).
RACY_NS = 100_000_000


def hash_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "l2v" / "file-hashes"


def _stamp(st: os.stat_result) -> dict[str, int]:
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def _entry_path(path: str) -> Path:
    return hash_folder() / f"{hashlib.sha256(path.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}.json"


def _remembered(entry: Path, path: str, stamp: dict[str, int]) -> str | None:
    try:
        saved = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(saved, dict) and saved.get("path") == path and saved.get("stat") == stamp:
        digest = saved.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    return None


def _read_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes; remembered (see the module doc) for files of 4 MB and more."""
    path = os.path.abspath(os.fspath(path))
    before = os.stat(path)
    if before.st_size < REMEMBER_FROM_BYTES:
        return _read_digest(path)
    stamp, entry = _stamp(before), _entry_path(path)
    digest = _remembered(entry, path, stamp)
    if digest is not None:
        return digest
    big = before.st_size >= ANNOUNCE_FROM_BYTES
    if big:
        logger.info("Hashing %s (%.1f GB) to fingerprint the model; once per file: later runs reuse the digest while "
                    "the file is unchanged", path, before.st_size / 1e9)
    start = time.monotonic()
    digest = _read_digest(path)
    seconds = time.monotonic() - start
    if big:
        logger.info("Hashed %s in %.1f s (%.2f GB/s)", os.path.basename(path), seconds,
                    before.st_size / 1e9 / max(seconds, 1e-9))
    recent = time.time_ns() - stamp["ctime_ns"] < RACY_NS
    if _stamp(os.stat(path)) == stamp and not recent:  # a file written while it was read is not remembered
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_json(entry, {"path": path, "stat": stamp, "sha256": digest}, indent=1)
        except OSError as err:
            logger.debug("Could not remember the digest of %s in %s: %s", path, entry, err)
    return digest
