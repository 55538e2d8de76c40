"""Batching by token budget, and the two batch layouts: left-padded rows or one packed sequence.

Texts arrive sorted by length (longest first), so consecutive texts make
batches with almost no padding. A packed batch concatenates its texts into one
sequence with per-text position ids and a block-diagonal mask, so no compute is
spent on padding at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Attention backends that run a packed sequence without a dense (T x T) mask.
VARLEN_BACKENDS = ("flash_attention_2", "flash_attention_3", "flex_attention")


def token_budget_batches(lengths: list[int], order: list[int], max_texts: int, max_tokens: int | None,
                         packed: bool) -> list[list[int]]:
    """Split ``order`` (indices sorted by length, longest first) into batches.

    A padded batch costs ``len(batch) * longest`` tokens, a packed one ``sum(lengths)``.
    """
    batches, current, longest, total = [], [], 0, 0
    for i in order:
        n = lengths[i]
        new_longest, new_total = max(longest, n), total + n
        cost = new_total if packed else new_longest * (len(current) + 1)
        if current and (len(current) >= max_texts or (max_tokens is not None and cost > max_tokens)):
            batches.append(current)
            current, new_longest, new_total = [], n, n
        current.append(i)
        longest, total = new_longest, new_total
    if current:
        batches.append(current)
    return batches


@dataclass
class Batch:
    """Model inputs plus what pooling needs to map states back to texts."""

    model_inputs: dict
    token_positions: torch.Tensor | None  # flat indices of real tokens in the (B*T) states; None = all
    seq_index: torch.Tensor
    pool_mask: torch.Tensor
    num_seqs: int


def pad_left(ids: list[list[int]], masks: list[list[bool]], pad_id: int, device) -> Batch:
    """Left-pad like the reference; position ids restart at 0 for every text."""
    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), longest), dtype=torch.long)
    pool_mask = torch.zeros((len(ids), longest), dtype=torch.bool)
    for row, (x, m) in enumerate(zip(ids, masks)):
        input_ids[row, longest - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[row, longest - len(x):] = 1
        pool_mask[row, longest - len(x):] = torch.tensor(m, dtype=torch.bool)
    input_ids, attention, pool_mask = input_ids.to(device), attention.to(device), pool_mask.to(device)
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    real = attention.bool().flatten()
    seq_index = torch.arange(len(ids), device=device).repeat_interleave(attention.sum(-1))
    return Batch(
        model_inputs={"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids},
        token_positions=real.nonzero().squeeze(-1),
        seq_index=seq_index,
        pool_mask=pool_mask.flatten()[real],
        num_seqs=len(ids),
    )


def pack(ids: list[list[int]], masks: list[list[bool]], attn_implementation: str, dtype: torch.dtype, device) -> Batch:
    """Concatenate texts into one sequence; attention stays inside each text."""
    lengths = torch.tensor([len(x) for x in ids], device=device)
    flat = torch.tensor([t for x in ids for t in x], dtype=torch.long, device=device)
    seq_index = torch.arange(len(ids), device=device).repeat_interleave(lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    position_ids = torch.arange(flat.numel(), device=device) - starts[seq_index]
    inputs = {"input_ids": flat[None], "position_ids": position_ids[None]}
    mask = block_diagonal_mask(seq_index, attn_implementation, dtype)
    if mask is not None:
        inputs["attention_mask"] = mask
    return Batch(
        model_inputs=inputs,
        token_positions=None,
        seq_index=seq_index,
        pool_mask=torch.tensor([b for m in masks for b in m], dtype=torch.bool, device=device),
        num_seqs=len(ids),
    )


def block_diagonal_mask(seq_index: torch.Tensor, attn_implementation: str, dtype: torch.dtype):
    """The mask that keeps each packed text to itself, in the form the backend takes.

    Flash kernels need none: transformers derives ``cu_seqlens`` from the restarting position ids.
    """
    if attn_implementation.startswith("flash_attention"):
        return None
    if attn_implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        doc = seq_index[None]  # indexed with the batch index too: the CPU kernel compiles only that form

        def same_text(b, h, q, kv):
            return doc[b, q] == doc[b, kv]

        n = seq_index.numel()
        return create_block_mask(same_text, B=1, H=None, Q_LEN=n, KV_LEN=n, device=seq_index.device)
    allowed = (seq_index[:, None] == seq_index[None, :])[None, None]
    if attn_implementation == "sdpa":
        return allowed
    # eager and other kernels take an additive float mask
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=seq_index.device), torch.finfo(dtype).min)
