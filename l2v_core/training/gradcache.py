"""GradCache: a contrastive loss over a batch larger than fits through the model at once.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup". The InfoNCE loss couples every text of the batch, so it cannot be split into
independent micro-batches; its gradient can, in two passes:

1. embed the batch chunk by chunk without autograd (activations of one chunk at a time);
2. compute the loss on those embeddings (gathered over processes, as without GradCache)
   and its gradient with respect to each embedding;
3. run every chunk again with autograd and backpropagate the cached embedding
   gradient through it (the surrogate ``(reps * grad).sum()`` has exactly that gradient).

The parameter gradients equal those of one pass over the whole batch as long as the
second pass computes the same embeddings as the first: dropout (SimCSE's only
augmentation) must draw the same masks, so the RNG state before each chunk's first pass
is recorded and replayed for its second (as the original GradCache's ``RandContext``).
Activation checkpointing inside the second pass stores and restores its own RNG state,
so it composes with this.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch


class RandContext:
    """The CPU and accelerator RNG states at construction; ``with ctx:`` replays from them.

    Leaving the block restores the RNG states found on entering it, so replaying does not
    change what later code draws.
    """

    def __init__(self, device: torch.device | None = None):
        self.device = device if device is not None and device.type == "cuda" else None
        self.cpu_state = torch.get_rng_state()
        self.device_state = torch.cuda.get_rng_state(self.device) if self.device is not None else None
        self._outer: tuple | None = None

    def __enter__(self) -> "RandContext":
        outer_device = torch.cuda.get_rng_state(self.device) if self.device is not None else None
        self._outer = (torch.get_rng_state(), outer_device)
        torch.set_rng_state(self.cpu_state)
        if self.device is not None:
            torch.cuda.set_rng_state(self.device_state, self.device)
        return self

    def __exit__(self, *exc) -> None:
        cpu, device_state = self._outer
        torch.set_rng_state(cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(device_state, self.device)
        self._outer = None


def chunked(items: Sequence, size: int) -> list[Sequence]:
    """``items`` in consecutive slices of at most ``size`` (the last may be shorter)."""
    if size <= 0:
        raise ValueError(f"chunk size must be > 0, got {size}")
    return [items[i:i + size] for i in range(0, len(items), size)]


def cached_backward(embed: Callable[[object], torch.Tensor], chunks: Sequence[object],
                    loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                    device: torch.device | None = None) -> torch.Tensor:
    """Backpropagate ``loss_fn(cat(embed(c) for c in chunks))`` one chunk at a time; return the loss (detached).

    ``embed`` maps one chunk to its (rows, dim) embeddings; ``loss_fn`` maps the
    concatenated embeddings to the scalar loss (it may gather over processes). ``backward``
    is called once per chunk on a surrogate scalar (pass ``accelerator.backward`` so loss
    scaling and gradient accumulation apply). Every chunk's backward but the last runs
    inside ``no_sync()`` so DistributedDataParallel reduces the summed gradient once.
    ``device`` is the model's device, whose RNG is replayed next to the CPU's.
    """
    if not chunks:
        raise ValueError("cached_backward needs at least one chunk")
    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandContext(device))
            cached.append(embed(chunk))
    reps = torch.cat(cached).detach().requires_grad_(True)
    loss = loss_fn(reps)
    # Only the loss (and the cross-process gather) lies between ``reps`` and the loss:
    # this backward touches no model parameter.
    loss.backward()
    grads = reps.grad.split([c.shape[0] for c in cached])
    del cached, reps
    last = len(chunks) - 1
    for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads)):
        with (no_sync() if i < last else contextlib.nullcontext()), state:
            again = embed(chunk)
            backward((again * grad.to(again.dtype)).sum())
    return loss.detach()
