"""Embedding cache for evaluations: a text is encoded once per model and encoder settings.

Vectors go to disk in chunks as they are computed, so a run killed in the middle of an
8.8M-passage corpus resumes at its last finished chunk, a re-run encodes nothing, and
tasks that share a corpus (under the same instruction) encode it once.

Layout::

    <cache>/l2v-cache.json                                marks the folder as l2v's (see l2v_eval.cache_folder)
    <cache>/CACHEDIR.TAG                                  backup tools skip it (only in a folder l2v created)
    <cache>/<org__model>/<settings>/settings.json         model, revision, kind, pooling, max length, dtype, adapters,
                                                          attention direction
    <cache>/<org__model>/<settings>/<instruction>/instruction.txt
    <cache>/<org__model>/<settings>/<instruction>/<writer>-<seq>.emb

``<settings>`` and ``<instruction>`` are digests of what they name. Inside an instruction
folder a text is keyed by the sha256 of its text (mteb's ``hash_item``), so a retrieval
corpus (documents get no instruction) is shared by every task and instruction mode.

Each ``.emb`` file is one chunk written by one process (``<writer>`` = rank + a random id,
so under torchrun every rank writes its own shard of each chunk and no two processes
ever write the same file), moved into place atomically, and self-checking: an 88-byte
header (magic, rows, width, sha256 of the keys, sha256 of the vectors), the 32-byte keys,
the float32 vectors. A file whose length or checksums do not match is reported, deleted
and its texts encoded again; it is never served.

mteb's ``CachedEmbeddingWrapper`` is the base class (model metadata and similarity pass
through, and ``ChunkStore`` implements mteb's ``CacheBackendProtocol``, so it also plugs
into the stock wrapper), but its ``encode`` is replaced: the stock one encodes every
missing text in one call and saves at the end (a killed run keeps nothing), keys its
cache by task name (no sharing across tasks), re-prepares an already prepared dataset
for the missing texts (a titled document becomes "title title body"), and its
``NumpyCache`` rewrites one index file in place with no checksum and no way for several
ranks to write at once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mteb._content_hashes import hash_item
from mteb.models.abs_encoder import get_prompt_name
from mteb.models.cache_wrappers import CachedEmbeddingWrapper
from tqdm.auto import tqdm

from l2v_core.distributed import world
from l2v_core.files import atomic_write

logger = logging.getLogger(__name__)

SUFFIX = ".emb"
MAGIC = b"L2VEMB01"
HEADER = struct.Struct("<8sQQ32s32s")  # magic, rows, width, sha256(keys), sha256(vectors)
KEY_BYTES = 32
DEFAULT_CHUNK_TEXTS = 2048


class CorruptChunk(ValueError):
    """A chunk file whose length, header or checksums are wrong."""


# ---------------------------------------------------------------------- chunk files
def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 32) uint8: the sha256 of each text, the key mteb's own cache uses (``hash_item``)."""
    keys = np.empty((len(texts), KEY_BYTES), dtype=np.uint8)
    for i, text in enumerate(texts):
        keys[i] = np.frombuffer(bytes.fromhex(hash_item({"text": text})), dtype=np.uint8)
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


def _prefixes(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(keys[:, :8]).view("<u8").ravel()


# ---------------------------------------------------------------------- one folder of chunks
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


# ---------------------------------------------------------------------- progress of one task
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} texts [{elapsed}{postfix}]"


class TaskProgress:
    """Texts of one task: how many were encoded and reused, and a bar with the encoding rate
    and an ETA (remaining texts at the rate of the texts actually encoded, so reused texts
    do not inflate it)."""

    def __init__(self, desc: str = "", expected: int | None = None, enabled: bool = False):
        self.encoded = 0
        self.reused = 0
        self.encode_seconds = 0.0
        self._announced = 0
        self._expected = expected or 0
        self.bar = tqdm(total=expected or None, desc=desc, unit="text", bar_format=BAR_FORMAT, leave=False,
                        disable=not enabled or world()[0] != 0, dynamic_ncols=True)

    def announce(self, n: int) -> None:
        """A call with ``n`` texts arrived; grows the total past the estimate when needed."""
        self._announced += n
        if self._announced > (self.bar.total or 0):
            self.bar.total = self._announced
            self.bar.refresh()

    def reuse(self, n: int) -> None:
        if n:
            self.reused += n
            self.bar.update(n)
            self._postfix()

    def encode(self, n: int, seconds: float) -> None:
        self.encoded += n
        self.encode_seconds += seconds
        self.bar.update(n)
        self._postfix()

    def _postfix(self) -> None:
        parts = []
        if self.encoded and self.encode_seconds > 0:
            rate = self.encoded / self.encode_seconds
            left = max((self.bar.total or 0) - self.bar.n, 0)
            parts.append(f"{rate:,.0f} texts/s, ETA {tqdm.format_interval(left / rate)}")
        if self.reused:
            parts.append(f"{self.reused:,} reused")
        self.bar.set_postfix_str(", ".join(parts))

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------- the encoder wrapper
def texts_of(inputs) -> list[str]:
    """The texts of an mteb dataloader, as the encoder reads them (documents: title + body)."""
    dataset = getattr(inputs, "dataset", None)
    if "text" in (getattr(dataset, "column_names", None) or ()):
        return list(dataset["text"])
    texts: list[str] = []
    for batch in inputs:
        if "text" in batch:
            texts.extend(batch["text"])
        else:
            titles = batch.get("title") or [""] * len(batch["body"])
            texts.extend(f"{t} {b}".strip() for t, b in zip(titles, batch["body"], strict=True))
    return texts


def _found_on_every_rank(found: np.ndarray) -> np.ndarray:
    """Under torchrun every rank must encode the same texts (encoding is a collective):
    a text counts as cached only where every rank found it."""
    if world()[1] == 1:
        return found
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    flags = torch.from_numpy(found.astype(np.int32)).to(device)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return flags.cpu().numpy().astype(bool)


def _my_rows(n: int) -> slice:
    """This rank's share of a chunk every rank holds: each rank writes its own shard."""
    rank, world_size = world()
    bounds = np.linspace(0, n, world_size + 1).astype(int)
    return slice(int(bounds[rank]), int(bounds[rank + 1]))


def _barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank's shard of the chunk is on disk before anyone looks up again


def _st_prompt(path: str, task_metadata, prompt_type) -> str:
    """The prompt a sentence-transformers model applies by itself for a task (from its config)."""
    config = Path(path) / "config_sentence_transformers.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    prompts = saved.get("prompts") or {}
    name = get_prompt_name(prompts or None, task_metadata, prompt_type) or saved.get("default_prompt_name")
    return prompts.get(name, "") if name else ""


class CachedEncoder(CachedEmbeddingWrapper):
    """An mteb encoder whose vectors are read from / written to an embedding cache folder.

    ``progress`` (a :class:`TaskProgress`) is set per task by the caller and counts the
    texts encoded and reused. ``chunk_texts`` is how many missing texts are encoded and
    written per chunk: at most that much work is lost when a run is killed.
    """

    def __init__(self, model, cache_path: str | os.PathLike, *, chunk_texts: int = DEFAULT_CHUNK_TEXTS):
        if not isinstance(chunk_texts, int) or chunk_texts < 1:
            raise ValueError(f"chunk_texts must be a positive integer, got {chunk_texts!r}")
        if world()[0] == 0:
            from .cache_folder import claim  # imported here: cache_folder reads this module's chunk format

            claim(cache_path)  # before mteb's wrapper creates the folder: only a folder l2v creates is tagged
        _barrier()  # no rank writes into the folder before rank 0 has checked and marked it
        super().__init__(model, cache_path, cache_backend=ChunkStore)
        self.chunk_texts = chunk_texts
        self.progress = TaskProgress()
        self.settings = encoder_settings(model)
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = self.cache_path / model.mteb_model_meta.model_name_as_path() / digest

    def close(self) -> None:
        # mteb's __del__ calls close(); after a refused __init__ there is no cache_dict to close.
        for store in getattr(self, "cache_dict", {}).values():
            store.close()

    def instruction_for(self, task_metadata, prompt_type) -> str:
        """The instruction (or prompt) the wrapped encoder puts before texts of this task and role."""
        spec = getattr(self._model, "spec", None)
        if spec is None:  # an encoder we know nothing about: one store per task and role, as mteb's cache
            return f"task:{task_metadata.name}:{prompt_type.value if prompt_type else ''}"
        if spec.kind == "sentence-transformers" and spec.instructions.label == "default":
            return _st_prompt(spec.path, task_metadata, prompt_type)
        return spec.instructions.for_task(task_metadata, prompt_type)

    def store(self, instruction: str) -> ChunkStore:
        digest = hashlib.sha256(instruction.encode()).hexdigest()[:16]
        if digest not in self.cache_dict:
            directory = self.folder / (f"instruction-{digest}" if instruction else "no-instruction")
            directory.mkdir(parents=True, exist_ok=True)
            if world()[0] == 0:
                _write_once(self.folder / "settings.json", json.dumps(self.settings, indent=2, sort_keys=True))
                _write_once(directory / "instruction.txt", instruction)
            self.cache_dict[digest] = ChunkStore(directory)
        return self.cache_dict[digest]

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        texts = texts_of(inputs)
        self.progress.announce(len(texts))
        if not texts:
            return self._encode_texts([], task_metadata, hf_split, hf_subset, prompt_type, batch_size, kwargs)
        store = self.store(self.instruction_for(task_metadata, prompt_type))
        keys = text_keys(texts)
        found, vectors = store.read(keys)
        found = _found_on_every_rank(found)
        missing = np.flatnonzero(~found)
        first: dict[bytes, int] = {}
        source = np.arange(len(texts))
        for i in missing:
            source[i] = first.setdefault(keys[i].tobytes(), int(i))
        todo = np.asarray(sorted(first.values()), dtype=np.int64)  # each missing text once
        self.progress.reuse(len(texts) - len(todo))
        for start in range(0, len(todo), self.chunk_texts):
            chunk = todo[start:start + self.chunk_texts]
            began = time.monotonic()
            new = self._encode_texts([texts[i] for i in chunk], task_metadata, hf_split, hf_subset, prompt_type,
                                     batch_size, kwargs)
            mine = _my_rows(len(chunk))
            store.append(keys[chunk][mine], new[mine])
            _barrier()
            if vectors is None:
                vectors = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
            vectors[chunk] = new
            self.progress.encode(len(chunk), time.monotonic() - began)
        vectors[missing] = vectors[source[missing]]  # repeated texts take their first copy's vector
        return vectors

    def _encode_texts(self, texts: list[str], task_metadata, hf_split, hf_subset, prompt_type, batch_size,
                      kwargs) -> np.ndarray:
        import torch
        from datasets import Dataset
        from torch.utils.data import DataLoader

        loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=batch_size)
        out = self._model.encode(loader, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                                 prompt_type=prompt_type, batch_size=batch_size,
                                 **{**kwargs, "show_progress_bar": False})
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        return np.asarray(out, dtype=np.float32)


def encoder_settings(model) -> dict[str, Any]:
    """What decides a model's vectors, besides the instruction and the text."""
    meta = model.mteb_model_meta
    settings: dict[str, Any] = {"model": meta.name, "revision": meta.revision}
    spec = getattr(model, "spec", None)
    if spec is None:
        settings["experiment"] = meta.experiment_name or ""
        return settings
    settings.update(kind=spec.kind, peft=list(spec.peft), pooling=spec.pooling, max_length=spec.max_length,
                    dtype=spec.dtype_name, causal=bool(spec.causal),
                    experiment=meta.experiment_name or "")
    return settings


def _write_once(path: Path, text: str) -> None:
    if not path.is_file():
        atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
