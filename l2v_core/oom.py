"""Running a list of batches so that a CUDA out-of-memory error costs a retry, never the work.

One implementation for every batched forward loop (``LLM2Vec.encode``, the probes' word features).
"""
from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch

B = TypeVar("B")


def run_splitting_on_oom(batches: Iterable[B], run: Callable[[B], None], split: Callable[[B], Sequence[B]],
                         size: Callable[[B], int] = len) -> None:
    """Call ``run(batch)`` for every batch, in order.

    A batch that raises ``torch.cuda.OutOfMemoryError`` is replaced by the parts ``split`` returns (its
    two halves) at the front of the queue; a batch that cannot be split re-raises. The retry happens
    after the exception handler has finished, so the failed pass's tensors (held by the traceback) are
    free by then. Later batches at least as large (``size``) as one that failed are split before they
    run instead of failing again. Nothing outside this call changes: the caller's batch settings stay
    as they were, and the next call starts from them again.
    """
    queue = deque(batches)
    failed_at = None  # the smallest size that ran out of memory in this call
    while queue:
        batch = queue.popleft()
        parts = None
        if failed_at is not None and size(batch) >= failed_at:
            parts = split(batch)
        if not parts:
            try:
                run(batch)
                continue
            except torch.cuda.OutOfMemoryError:
                parts = split(batch)
                if not parts:
                    raise
            if failed_at is None:
                warnings.warn("CUDA out of memory: halving the batch and retrying", stacklevel=3)
            failed_at = size(batch) if failed_at is None else min(failed_at, size(batch))
            torch.cuda.empty_cache()
        queue.extendleft(reversed(parts))
