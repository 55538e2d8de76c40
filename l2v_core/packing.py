"""Batch planning, and the batch layouts: equal-length rows, left-padded rows, or one packed sequence.

Texts arrive sorted by length (longest first). On the padded path the planner cuts
that order into batches of (nearly) equal lengths: a batch whose rows are all
equally long runs with no attention mask and no position ids at all (the dense
layout, the fastest a kernel can run); rows of different lengths are left-padded
and masked only where that is cheaper than one more forward pass. A packed batch
concatenates its texts into one sequence with per-text position ids and a
block-diagonal mask, so no compute is spent on padding at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Attention backends that run a packed sequence without a dense (T x T) mask.
VARLEN_BACKENDS = ("flash_attention_2", "flash_attention_3", "flex_attention")
# Every attention backend (transformers' attn_implementation) l2v runs bidirectionally, packed or padded.
ATTENTION_BACKENDS = ("eager", "sdpa", *VARLEN_BACKENDS)

# Cost model of the padded-path planner, in "tokens of compute" (one token of a row of the given length).
# The fixed cost of one forward pass (Python, kernel launches, mask building), measured on the SmolLM2-135M
# shape, fp32, 2 CPU cores: 25-45 tokens; on a GPU it is thousands (a kernel launch costs what a small
# matmul does), so there the planner keeps large batches and drops only the masks it can.
FORWARD_COST = {"cpu": 32.0}
FORWARD_COST_OTHER_DEVICES = 4096.0
# What the mask path adds to a batch's compute: building the (B, 1, T, T) mask and the masked kernel.
# Measured on CPU (SmolLM2 shape, torch SDPA): the masked kernel itself costs the same as the unmasked one
# (within 3%, T = 16..510), the whole masked forward 1-5% more; GPUs lose their flash kernel to a mask.
MASK_COST = {"cpu": 0.03}
MASK_COST_OTHER_DEVICES = 0.25


@dataclass(frozen=True)
class PlannedBatch:
    """One forward pass: which texts (input indices), their token counts, and the layout."""

    indices: tuple[int, ...]
    lengths: tuple[int, ...]
    packed: bool = False

    @property
    def layout(self) -> str:
        """``packed``, ``dense`` (equal lengths: no mask, no padding) or ``padded`` (left-padded, masked)."""
        if self.packed:
            return "packed"
        return "dense" if min(self.lengths) == max(self.lengths) else "padded"

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    @property
    def computed_tokens(self) -> int:
        """Tokens the model runs on, padding included."""
        return self.tokens if self.packed else len(self.lengths) * max(self.lengths)

    def halves(self) -> tuple[PlannedBatch, ...]:
        """The batch cut in two (for an out-of-memory retry); () for a single text."""
        if len(self.indices) < 2:
            return ()
        half = len(self.indices) // 2
        return (PlannedBatch(self.indices[:half], self.lengths[:half], self.packed),
                PlannedBatch(self.indices[half:], self.lengths[half:], self.packed))


def attention_share(config) -> float:
    """Attention compute per token per unit of sequence length, relative to the rest of a layer.

    A row of length T costs about T * (1 + share * T): 2 * params FLOPs per token in the layer's matmuls
    and 4 * heads * head_dim * T in attention.
    """
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    params = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * inter
    return 2.0 * heads * head_dim / params


def plan_batches(lengths: list[int], order: list[int], max_texts: int, max_tokens: int | None, packed: bool,
                 device_type: str = "cpu", share: float = 0.0) -> list[PlannedBatch]:
    """Split ``order`` (indices sorted by length, longest first) into batches.

    Packed batches are filled greedily up to ``max_tokens`` real tokens. Padded batches (at most
    ``max_texts`` rows and ``max_tokens`` tokens with padding) come from :func:`cheapest_cut`.
    """
    if packed:
        cuts = token_budget_batches(lengths, order, max_texts, max_tokens)
    else:
        forward = FORWARD_COST.get(device_type, FORWARD_COST_OTHER_DEVICES)
        mask = MASK_COST.get(device_type, MASK_COST_OTHER_DEVICES)
        cuts = cheapest_cut([lengths[i] for i in order], max_texts, max_tokens, forward, mask, share)
        cuts = [[order[k] for k in range(start, end)] for start, end in cuts]
    return [PlannedBatch(tuple(b), tuple(lengths[i] for i in b), packed) for b in cuts]


def cheapest_cut(sorted_lengths: list[int], max_texts: int, max_tokens: int | None, forward_cost: float,
                 mask_cost: float, share: float) -> list[tuple[int, int]]:
    """Contiguous batches ``[start, end)`` of non-increasing lengths with the least total :func:`batch_cost`.

    Dynamic programming over the cut points, in about linear time. For each end, a batch of equal
    lengths (within the run of the end's length) needs only its earliest allowed start: one row
    earlier adds a row no longer than the batch's own and takes from the batch before its shortest
    row. A masked batch whose longest rows form run q costs ``forward_cost + rows * w_q``, so its best
    start in q is the least ``best[s] - s * w_q`` over the allowed ``s`` in q: a suffix minimum per run.
    """
    n = len(sorted_lengths)
    runs, run_of = [], []
    for i, length in enumerate(sorted_lengths):
        if not runs or length != sorted_lengths[runs[-1][0]]:
            runs.append([i, i])
        runs[-1][1] = i + 1
        run_of.append(len(runs) - 1)

    def rows_allowed(longest: int) -> int:
        return max_texts if max_tokens is None else min(max_texts, max_tokens // longest)

    best = [0.0] + [float("inf")] * n
    start_of = [0] * (n + 1)
    suffix_min: dict[int, list[tuple[float, int]]] = {}
    for end in range(1, n + 1):
        own = run_of[end - 1]
        longest = sorted_lengths[end - 1]
        start = max(runs[own][0], end - max(1, rows_allowed(longest)))
        best[end] = best[start] + batch_cost(end - start, longest, False, forward_cost, mask_cost, share)
        start_of[end] = start
        q = own - 1
        while start == runs[q + 1][0] and q >= 0:  # the whole run below fits: try starts in run q
            q_start, q_end = runs[q]
            longest = sorted_lengths[q_start]
            start = max(q_start, end - rows_allowed(longest))
            if start >= q_end:
                break
            if q not in suffix_min:
                suffix_min[q] = _suffix_minima(best, q_start, q_end, _row_cost(longest, share) * (1.0 + mask_cost))
            value, at = suffix_min[q][start - q_start]
            cost = value + end * _row_cost(longest, share) * (1.0 + mask_cost) + forward_cost
            if cost < best[end]:
                best[end], start_of[end] = cost, at
            q -= 1
    cuts, end = [], n
    while end > 0:
        cuts.append((start_of[end], end))
        end = start_of[end]
    return cuts[::-1]


def _row_cost(length: int, share: float) -> float:
    return length * (1.0 + share * length)


def _suffix_minima(best: list[float], start: int, end: int, weight: float) -> list[tuple[float, int]]:
    """For each s in [start, end): the least ``best[t] - t * weight`` over t in [s, end), and that t."""
    out: list[tuple[float, int]] = []
    current = (float("inf"), end)
    for t in range(end - 1, start - 1, -1):
        current = min(current, (best[t] - t * weight, t))
        out.append(current)
    return out[::-1]


def batch_cost(rows: int, longest: int, masked: bool, forward_cost: float, mask_cost: float, share: float) -> float:
    """Modelled run time of a padded batch: a fixed cost per pass plus ``rows * T * (1 + share * T)`` for
    its longest text T, times ``1 + mask_cost`` when its rows differ in length (padding and a mask)."""
    compute = rows * _row_cost(longest, share)
    return forward_cost + (compute * (1.0 + mask_cost) if masked else compute)


def token_budget_batches(lengths: list[int], order: list[int], max_texts: int,
                         max_tokens: int | None) -> list[list[int]]:
    """Split ``order`` (indices sorted by length, longest first) greedily into packed batches of at most
    ``max_texts`` texts and ``max_tokens`` real tokens."""
    batches, current, total = [], [], 0
    for i in order:
        n = lengths[i]
        if current and (len(current) >= max_texts or (max_tokens is not None and total + n > max_tokens)):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += n
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


def left_pad(ids: list[list[int]], masks: list[list[bool]], pad_id: int):
    """(input_ids, attention_mask, pool_mask) rows, left-padded like the reference (on the CPU)."""
    longest = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), longest), dtype=torch.long)
    pool_mask = torch.zeros((len(ids), longest), dtype=torch.bool)
    for row, (x, m) in enumerate(zip(ids, masks)):
        input_ids[row, longest - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[row, longest - len(x):] = 1
        pool_mask[row, longest - len(x):] = torch.tensor(m, dtype=torch.bool)
    return input_ids, attention, pool_mask


def padded_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> Batch:
    """A left-padded batch: position ids restart at 0 on every text's first real token, and pooling
    sees the real tokens only. Shared by encoding and the training ``forward``."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    real = attention_mask.bool()
    seq_index = torch.arange(real.shape[0], device=real.device).repeat_interleave(real.sum(-1))
    return Batch(
        model_inputs={"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids},
        token_positions=real.flatten().nonzero().squeeze(-1),
        seq_index=seq_index,
        pool_mask=pool_mask.bool()[real],
        num_seqs=real.shape[0],
    )


def pad_left(ids: list[list[int]], masks: list[list[bool]], pad_id: int, device) -> Batch:
    """Rows for the model: with no attention mask at all when every text has the same length."""
    if len({len(x) for x in ids}) == 1:
        width = len(ids[0])
        return Batch(
            model_inputs={"input_ids": torch.tensor(ids, dtype=torch.long, device=device)},
            token_positions=None,
            seq_index=torch.arange(len(ids), device=device).repeat_interleave(width),
            pool_mask=torch.tensor([b for m in masks for b in m], dtype=torch.bool, device=device),
            num_seqs=len(ids),
        )
    return padded_batch(*(t.to(device) for t in left_pad(ids, masks, pad_id)))


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
