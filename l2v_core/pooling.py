"""Pooling token states into one vector per text.

Every batch layout (left-padded rows or one packed sequence) is first flattened
to its real tokens in order, with the index of the text each token belongs to;
one implementation then serves both layouts and every pooling mode.
"""
from __future__ import annotations

import torch

POOLING_MODES = ("mean", "weighted_mean", "eos_token", "last_token", "bos_token")


def check_pooling_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"Unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
    return mode


def pool(token_states: torch.Tensor, seq_index: torch.Tensor, pool_mask: torch.Tensor,
         num_seqs: int, mode: str) -> torch.Tensor:
    """Pool flattened token states.

    token_states: (N, H) real tokens of all texts, each text's tokens contiguous and in order.
    seq_index:    (N,) which text each token belongs to (non-decreasing).
    pool_mask:    (N,) tokens that may be pooled (instruction and special tokens excluded).
    Returns (num_seqs, H) in float32.
    """
    states = token_states.float()
    counts = torch.bincount(seq_index, minlength=num_seqs)
    ends = torch.cumsum(counts, 0)
    if mode in ("eos_token", "last_token"):
        return states[ends - 1]
    if mode == "bos_token":
        return states[ends - counts]

    weights = pool_mask.to(states.dtype)
    # A text whose poolable part is empty (e.g. cut to nothing) falls back to all of its tokens.
    pooled_per_seq = torch.zeros(num_seqs, device=states.device, dtype=states.dtype).index_add_(0, seq_index, weights)
    empty = pooled_per_seq == 0  # no `if empty.any()`: that would stall the GPU stream every batch
    weights = torch.where(empty[seq_index], torch.ones_like(weights), weights)
    if mode == "weighted_mean":
        # weights 1..n over each text's pooled tokens, in order
        running = torch.cumsum(weights, 0)
        per_seq = torch.where(empty, counts.to(states.dtype), pooled_per_seq)
        offset = torch.cumsum(per_seq, 0) - per_seq
        weights = (running - offset[seq_index]) * weights
    total = torch.zeros(num_seqs, device=states.device, dtype=states.dtype).index_add_(0, seq_index, weights)
    summed = torch.zeros(num_seqs, states.shape[-1], device=states.device, dtype=states.dtype)
    summed.index_add_(0, seq_index, states * weights[:, None])
    return summed / total[:, None]
