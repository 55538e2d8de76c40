"""Batch planning (equal-length buckets, masks only where they pay) and the batch layouts give the same vectors."""
import random

import pytest
import torch

from l2v_core import LLM2Vec, POOLING_MODES
from l2v_core.packing import PlannedBatch, batch_cost, cheapest_cut, pad_left, plan_batches
from tests import tiny

TEXTS = tiny.LAYOUT_TEXTS


def _cut(lengths, max_texts=32, max_tokens=None, forward=32.0, mask=0.03, share=0.0):
    return [[lengths[i] for i in range(a, b)] for a, b in cheapest_cut(lengths, max_texts, max_tokens, forward,
                                                                        mask, share)]


def test_cheapest_cut_keeps_equal_lengths_together_and_pads_only_where_it_pays():
    lengths = [300, 120, 120, 120, 50, 50, 49, 10, 10, 10, 10, 9, 3]
    cut = _cut(lengths)
    assert [x for batch in cut for x in batch] == lengths  # every text once, in order
    assert [300] in cut and [120, 120, 120] in cut  # a long text alone beats 180 tokens of padding
    assert [50, 50, 49] in cut  # one token of padding is cheaper than another pass
    # with no cost per pass every batch is padding-free; with a huge one batches fill up
    assert all(len(set(b)) == 1 for b in _cut(lengths, forward=0.0))
    assert len(_cut(lengths, max_texts=5, forward=1e9)) == 3  # the fewest passes of at most 5 rows


def test_cheapest_cut_respects_the_row_and_token_limits():
    lengths = [40] * 10 + [20] * 10
    cut = _cut(lengths, max_texts=4, max_tokens=100)
    assert all(len(b) <= 4 and len(b) * max(b) <= 100 for b in cut)
    assert _cut([700, 5], max_tokens=100)[0] == [700]  # a text over the budget still runs, alone


def test_plan_batches_packed_fills_the_token_budget():
    lengths = [5, 9, 3, 9, 7]
    order = sorted(range(5), key=lambda i: -lengths[i])
    batches = plan_batches(lengths, order, max_texts=10, max_tokens=20, packed=True)
    assert [b.indices for b in batches] == [(1, 3), (4, 0, 2)]
    assert all(b.layout == "packed" and b.computed_tokens == b.tokens <= 20 for b in batches)


def test_planned_batch_layouts_and_halves():
    dense = PlannedBatch((4, 2, 7), (9, 9, 9))
    padded = PlannedBatch((1, 0, 3), (12, 9, 9))
    assert (dense.layout, dense.computed_tokens) == ("dense", 27)
    assert (padded.layout, padded.computed_tokens, padded.tokens) == ("padded", 36, 30)
    assert padded.halves() == (PlannedBatch((1,), (12,)), PlannedBatch((0, 3), (9, 9)))
    assert PlannedBatch((5,), (4,)).halves() == ()


def test_equal_length_rows_get_no_mask_and_no_position_ids():
    dense = pad_left([[5, 6, 7], [8, 9, 10]], [[False, True, True], [True, True, True]], 0, "cpu")
    assert set(dense.model_inputs) == {"input_ids"} and dense.token_positions is None
    assert dense.seq_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert dense.pool_mask.tolist() == [False, True, True, True, True, True]
    padded = pad_left([[5, 6, 7], [8]], [[True] * 3, [True]], 0, "cpu")
    assert padded.model_inputs["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert padded.model_inputs["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert padded.token_positions.tolist() == [0, 1, 2, 5]


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_bucketed_batches_give_the_padded_vectors(tiny_llama, backend, mode, monkeypatch):
    enc = LLM2Vec.from_pretrained(tiny_llama, pooling_mode=mode, attn_implementation=backend)
    plan = enc.plan(TEXTS, batch_size=4, device="cpu")
    assert {b.layout for b in plan.batches} == {"dense", "padded"}
    assert sorted(i for b in plan.batches for i in b.indices) == list(range(len(TEXTS)))
    real_forward, masks = enc.model.forward, []

    def spy(*args, **kwargs):
        masks.append(kwargs.get("attention_mask") is not None)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(enc.model, "forward", spy)
    bucketed = enc.encode(TEXTS, batch_size=4, show_progress_bar=False)
    assert masks == [b.layout == "padded" for b in plan.batches]  # a mask only on padded batches
    with torch.no_grad():  # all texts in one left-padded, masked batch: the training path
        padded = enc.forward(enc.tokenize(TEXTS))
    assert torch.allclose(bucketed, padded, atol=1e-5)
    one_by_one = torch.cat([enc.encode([t], show_progress_bar=False) for t in TEXTS])
    assert torch.allclose(bucketed, one_by_one, atol=1e-5)


def test_plan_counts_tokens_without_running_the_model(tiny_llama, monkeypatch):
    enc = LLM2Vec.from_pretrained(tiny_llama)
    monkeypatch.setattr(enc.model, "forward", None)  # planning must not call it
    plan = enc.plan(TEXTS, batch_size=3, device="cpu")
    assert plan.num_tokens == sum(plan.lengths) and plan.computed_tokens >= plan.num_tokens
    assert all(len(b.indices) <= 3 for b in plan.batches)
    assert [max(b.lengths) for b in plan.batches] == sorted((max(b.lengths) for b in plan.batches), reverse=True)


def _brute_force_cost(lengths, max_texts, max_tokens, forward, mask, share):
    """The least total cost over every way to cut, by plain dynamic programming over all starts."""
    best = [0.0] + [float("inf")] * len(lengths)
    for end in range(1, len(lengths) + 1):
        for start in range(max(0, end - max_texts), end):
            rows, longest = end - start, lengths[start]
            if max_tokens is not None and rows > 1 and rows * longest > max_tokens:
                continue
            cost = batch_cost(rows, longest, longest != lengths[end - 1], forward, mask, share)
            best[end] = min(best[end], best[start] + cost)
    return best[-1]


@pytest.mark.parametrize("seed", range(40))
def test_cheapest_cut_finds_the_least_cost(seed):
    rng = random.Random(seed)
    lengths = sorted((rng.choice([rng.randint(1, 12), rng.randint(1, 200)]) for _ in range(rng.randint(1, 60))),
                     reverse=True)
    max_texts, max_tokens = rng.randint(1, 12), rng.choice([None, rng.randint(1, 400)])
    forward, mask, share = rng.choice([0.0, 8.0, 32.0, 4096.0]), rng.choice([0.0, 0.03, 0.25]), rng.random() * 1e-2
    cut = cheapest_cut(lengths, max_texts, max_tokens, forward, mask, share)
    assert [i for a, b in cut for i in range(a, b)] == list(range(len(lengths)))
    assert all(b - a <= max_texts and (b - a == 1 or max_tokens is None or (b - a) * lengths[a] <= max_tokens)
               for a, b in cut)
    total = sum(batch_cost(b - a, lengths[a], lengths[a] != lengths[b - 1], forward, mask, share) for a, b in cut)
    assert total == pytest.approx(_brute_force_cost(lengths, max_texts, max_tokens, forward, mask, share), rel=1e-9)
