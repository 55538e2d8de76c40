"""Rank sharding and gathering over torch.distributed (torchrun / accelerate launch).

Encoding splits texts across ranks by token count, not text count, so every
rank does about the same work; vectors are gathered back in input order. Works
with NCCL (one process per GPU) and gloo (CPU).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist

_local_only = 0


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside an initialized process group or inside :func:`this_process_only`."""
    if dist.is_available() and dist.is_initialized() and not _local_only:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def this_process_only() -> Iterator[None]:
    """Inside the block this process works alone (encoding is not sharded), while the others do
    something else, e.g. wait while the main process of a training run evaluates."""
    global _local_only
    _local_only += 1
    try:
        yield
    finally:
        _local_only -= 1


def shard_by_tokens(lengths: list[int], world_size: int) -> list[list[int]]:
    """Indices for each rank, balancing token counts: longest first, each to the lightest rank.

    Deterministic, so every rank computes the same plan without talking to the others.
    """
    loads = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shards[rank].append(i)
        loads[rank] += lengths[i]
    return shards


def gather_rows(local: torch.Tensor, shards: list[list[int]], total: int) -> torch.Tensor:
    """Assemble every rank's rows (``local`` holds this rank's shard, in shard order) into a
    (total, dim) tensor in input order, on every rank. A rank with an empty shard still joins."""
    rank, world_size = world()
    width = max(len(s) for s in shards)
    dim = local.shape[-1]
    backend = dist.get_backend()
    device = local.device if backend != "gloo" else torch.device("cpu")
    padded = torch.zeros(width, dim, dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    out = torch.empty(total, dim, dtype=local.dtype, device=device)
    for r, shard in enumerate(shards):
        if shard:
            out[torch.tensor(shard, device=device)] = parts[r][: len(shard)]
    return out
