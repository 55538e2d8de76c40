"""The mteb encoder of the embedding cache: texts already in the cache are served from it, the
others are encoded and written chunk by chunk as they are computed.

mteb's ``CachedEmbeddingWrapper`` is the base class (model metadata and similarity pass
through, and :class:`~.store.ChunkStore` implements mteb's ``CacheBackendProtocol``, so it also
plugs into the stock wrapper), but its ``encode`` is replaced: the stock one encodes every
missing text in one call and saves at the end (a killed run keeps nothing), keys its
cache by task name (no sharing across tasks), re-prepares an already prepared dataset
for the missing texts (a titled document becomes "title title body"), and its
``NumpyCache`` rewrites one index file in place with no checksum and no way for several
ranks to write at once.

Under torchrun every rank writes its own shard of each chunk (``<writer>`` in the file name
is the rank and a random id), so no two processes ever write the same file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.cache_wrappers import CachedEmbeddingWrapper

from l2v_core.distributed import world
from l2v_core.files import atomic_write

from ..cache_folder import claim
from ..encoder_adapter import texts_of
from ..progress import TaskProgress
from .chunks import text_keys
from .store import ChunkStore
from l2v_core.errors import check_positive_int

if TYPE_CHECKING:
    from ..encoder_adapter import L2VEncoder

DEFAULT_CHUNK_TEXTS = 2048


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


class CachedEncoder(CachedEmbeddingWrapper):
    """An mteb encoder whose vectors are read from / written to an embedding cache folder.

    It wraps an :class:`~l2v_eval.encoder_adapter.L2VEncoder` and files vectors under what that
    adapter states: its ``settings()`` and its ``instruction_for(task, prompt_type)``.

    ``progress`` (a :class:`TaskProgress`) is set per task by the caller and counts the
    texts encoded and reused. ``chunk_texts`` is how many missing texts are encoded and
    written per chunk: at most that much work is lost when a run is killed.
    """

    def __init__(self, model: L2VEncoder, cache_path: str | os.PathLike, *, chunk_texts: int = DEFAULT_CHUNK_TEXTS):
        check_positive_int("chunk_texts", chunk_texts)
        if world()[0] == 0:
            claim(cache_path)  # before mteb's wrapper creates the folder: only a folder l2v creates is tagged
        _barrier()  # no rank writes into the folder before rank 0 has checked and marked it
        super().__init__(model, cache_path, cache_backend=ChunkStore)
        self.chunk_texts = chunk_texts
        self.progress = TaskProgress()
        self.settings = model.settings()
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = self.cache_path / model.mteb_model_meta.model_name_as_path() / digest

    def close(self) -> None:
        # mteb's __del__ calls close(); after a refused __init__ there is no cache_dict to close.
        for store in getattr(self, "cache_dict", {}).values():
            store.close()

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
        store = self.store(self._model.instruction_for(task_metadata, prompt_type))
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


def _write_once(path: Path, text: str) -> None:
    if not path.is_file():
        atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
