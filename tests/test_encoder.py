"""LLM2Vec encoding semantics and bad input, on tiny random models."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel

from l2v_core import LLM2Vec, POOLING_MODES
from l2v_core.loading import AdapterError, ModelLoadError
from tests import tiny

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    ["Retrieve passages that answer the question:", "Paris is the capital and most populous city of France."],
    "Cats and dogs.",
    ["Given a claim, find documents that refute the claim:", "The stock market fell sharply after the announcement."],
    "A man is playing a guitar on the street every summer morning.",
]


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return LLM2Vec.from_pretrained(tiny_llama)


def manual_vectors(encoder, texts, mode):
    """Pooling written out by hand, one text at a time, from the raw model."""
    out = []
    for item in texts:
        instruction, text = item if isinstance(item, list) else ("", item)
        prefix = f"{instruction.strip()} " if instruction else ""
        ids = encoder.tokenizer(prefix + text)["input_ids"]
        # the reference's count: the text tokenized on its own
        n_text = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            states = encoder.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        text_states = states[-n_text:]
        if mode == "mean":
            out.append(text_states.mean(0))
        elif mode == "weighted_mean":
            w = torch.arange(1, n_text + 1, dtype=torch.float32)
            out.append((text_states * (w / w.sum())[:, None]).sum(0))
        elif mode in ("eos_token", "last_token"):
            out.append(states[-1])
        else:
            out.append(states[0])
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["mean", "weighted_mean", "last_token", "bos_token"])
def test_pooling_matches_hand_computation(encoder, mode):
    encoder.pooling_mode = mode
    try:
        got = encoder.encode(TEXTS, batch_size=2, show_progress_bar=False)
    finally:
        encoder.pooling_mode = "mean"
    assert torch.allclose(got, manual_vectors(encoder, TEXTS, mode), atol=1e-5)


def test_instruction_tokens_are_excluded_from_pooling(encoder):
    text = "Paris is the capital and most populous city of France."
    with_instr = encoder.encode([["Retrieve passages:", text]], show_progress_bar=False)
    other_instr = encoder.encode([["Find me some documents now:", text]], show_progress_bar=False)
    # instructions still shape the text tokens' states (bidirectional attention) ...
    assert not torch.allclose(with_instr, other_instr, atol=1e-4)
    # ... but skip_instruction=False pools over the instruction too, which changes the vector more
    encoder.skip_instruction = False
    try:
        pooled_all = encoder.encode([["Retrieve passages:", text]], show_progress_bar=False)
    finally:
        encoder.skip_instruction = True
    assert not torch.allclose(with_instr, pooled_all, atol=1e-4)
    features = encoder.tokenize([["Retrieve passages:", text]])
    n_text = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert int(features["embed_mask"].sum()) == n_text


def test_order_and_batching_do_not_change_vectors(encoder):
    all_at_once = encoder.encode(TEXTS, batch_size=32, show_progress_bar=False)
    one_by_one = torch.cat([encoder.encode([t], batch_size=1, show_progress_bar=False) for t in TEXTS])
    reversed_ = encoder.encode(TEXTS[::-1], batch_size=2, show_progress_bar=False).flip(0)
    assert torch.allclose(all_at_once, one_by_one, atol=1e-5)
    assert torch.allclose(all_at_once, reversed_, atol=1e-5)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flex_attention"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_packed_equals_padded(tiny_llama, mode, backend):
    enc = LLM2Vec.from_pretrained(tiny_llama, pooling_mode=mode, attn_implementation=backend)
    enc.packing = False
    padded = enc.encode(TEXTS, batch_size=3, show_progress_bar=False)
    enc.packing = True
    packed = enc.encode(TEXTS, batch_size=3, show_progress_bar=False)
    assert torch.allclose(padded, packed, atol=1e-5)


def test_training_forward_matches_encode_and_has_gradients(encoder):
    features = encoder.tokenize(TEXTS)
    out = encoder.forward(features)
    assert out.requires_grad
    assert torch.allclose(out.detach(), encoder.encode(TEXTS, show_progress_bar=False), atol=1e-5)
    # the reference's string form of an instruction pair gives the same features
    ref_form = encoder.tokenize(["Retrieve passages that answer the question: !@#$%^&*()Paris is the capital and most populous city of France."])
    pair_form = encoder.tokenize([TEXTS[1]])
    assert torch.equal(ref_form["input_ids"], pair_form["input_ids"])
    assert torch.equal(ref_form["embed_mask"], pair_form["embed_mask"])



def test_training_forward_runs_mixed_lengths_trimmed_with_the_vectors_and_gradients_of_one_padded_pass(
        encoder, monkeypatch):
    """A batch of short and long rows (as sentence-transformers pads a query, positive and negative column
    together) runs as length-sorted groups each trimmed to its own longest row: fewer positions, the same
    vectors in the same order, the same gradients."""
    from l2v_core.packing import padded_batch

    texts = [("word " * n).strip() for n in (3, 40, 5, 38, 2, 41, 4, 39)]
    features = encoder.tokenize(texts)
    widths = []
    real_forward = encoder.model.forward

    def counting_forward(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(encoder.model, "forward", counting_forward)
    weight = encoder.model.get_input_embeddings().weight
    grouped = encoder.forward(features)
    (grad_grouped,) = torch.autograd.grad(grouped.square().sum(), weight)
    assert len(widths) > 1 and sum(r * w for r, w in widths) < features["input_ids"].numel()
    one_pass = encoder._pooled(padded_batch(features["input_ids"], features["attention_mask"],
                                            features["embed_mask"]))
    (grad_one_pass,) = torch.autograd.grad(one_pass.square().sum(), weight)
    assert torch.allclose(grouped, one_pass, atol=1e-5)
    assert torch.allclose(grad_grouped, grad_one_pass, atol=1e-5)

def test_save_and_load_round_trip(encoder, tmp_path):
    encoder.pooling_mode = "weighted_mean"
    try:
        before = encoder.encode(TEXTS, show_progress_bar=False)
        encoder.save(tmp_path / "saved")
    finally:
        encoder.pooling_mode = "mean"
    with open(tmp_path / "saved" / "llm2vec_config.json") as f:
        assert json.load(f)["pooling_mode"] == "weighted_mean"
    again = LLM2Vec.from_pretrained(tmp_path / "saved")
    assert again.pooling_mode == "weighted_mean"
    assert torch.allclose(before, again.encode(TEXTS, show_progress_bar=False), atol=1e-6)
    # explicit arguments override the saved config
    assert LLM2Vec.from_pretrained(tmp_path / "saved", pooling_mode="mean").pooling_mode == "mean"


def test_causal_mode_differs_from_bidirectional(tiny_llama, encoder):
    causal = LLM2Vec.from_pretrained(tiny_llama, enable_bidirectional=False)
    assert not torch.allclose(causal.encode(TEXTS, show_progress_bar=False), encoder.encode(TEXTS, show_progress_bar=False), atol=1e-3)


def test_direction_is_recorded_once_and_older_records_still_load(tiny_llama, tmp_path):
    from l2v_core import is_bidirectional
    from l2v_core.encoder import LEGACY_DIRECTION_KEY

    def config_json(folder):
        return json.loads((folder / "config.json").read_text())

    LLM2Vec.from_pretrained(tiny_llama, enable_bidirectional=False).save(tmp_path / "causal")
    assert json.loads((tmp_path / "causal" / "llm2vec_config.json").read_text())["bidirectional"] is False
    assert LEGACY_DIRECTION_KEY not in config_json(tmp_path / "causal")
    # A folder of an older version: the direction only in config.json (and there as the opposite of the truth
    # once the model is loaded the other way round and saved again).
    legacy = tmp_path / "legacy"
    LLM2Vec.from_pretrained(tiny_llama).save(legacy)
    (legacy / "llm2vec_config.json").unlink()
    (legacy / "config.json").write_text(json.dumps({**config_json(legacy), LEGACY_DIRECTION_KEY: False}))
    assert not is_bidirectional(LLM2Vec.from_pretrained(legacy).model)
    LLM2Vec.from_pretrained(legacy, enable_bidirectional=True).save(tmp_path / "resaved")
    assert LEGACY_DIRECTION_KEY not in config_json(tmp_path / "resaved")
    assert is_bidirectional(LLM2Vec.from_pretrained(tmp_path / "resaved").model)


def test_numpy_output_and_empty_list(encoder):
    arr = encoder.encode(TEXTS[:2], convert_to_numpy=True, show_progress_bar=False)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (2, encoder.hidden_size)
    empty = encoder.encode([], convert_to_numpy=True, show_progress_bar=False)
    assert empty.shape == (0, encoder.hidden_size)
    assert encoder.encode([], show_progress_bar=False).shape == (0, encoder.hidden_size)


@pytest.mark.parametrize("bad, error, where", [
    (["fine", ""], ValueError, r"sentences\[1\] is an empty string"),
    (["fine", None], TypeError, r"sentences\[1\]"),
    (["fine", 3, "ok"], TypeError, r"sentences\[1\]"),
    ([["instruction", None]], TypeError, r"sentences\[0\]: the text"),
    ([[None, "text"]], TypeError, r"sentences\[0\]: the instruction"),
    (None, TypeError, "sentences must be"),
])
def test_bad_items_are_named(encoder, bad, error, where):
    with pytest.raises(error, match=where):
        encoder.encode(bad, show_progress_bar=False)


def test_huge_text_is_truncated_with_one_warning(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, max_length=64, doc_max_length=48)
    huge = " ".join(["the quick brown fox jumps over the lazy dog"] * 2000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vecs = enc.encode([huge, "short text", huge], show_progress_bar=False)
    truncation_warnings = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation_warnings) == 1
    assert "2 input(s)" in str(truncation_warnings[0].message)
    assert torch.isfinite(vecs).all()
    assert torch.allclose(vecs[0], vecs[2])
    tokens = enc.tokenize([huge])
    assert tokens["input_ids"].shape[1] <= 64


def test_unknown_pooling_mode(tiny_llama):
    with pytest.raises(ValueError, match="Unknown pooling mode 'max'.*mean"):
        LLM2Vec.from_pretrained(tiny_llama, pooling_mode="max")


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        LLM2Vec.from_pretrained(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        LLM2Vec.from_pretrained(str(tmp_path / "model.gguf"))


def _lora_adapter(base_dir, out_dir, r=4):
    from peft import LoraConfig, get_peft_model

    base = AutoModel.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=r, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(out_dir)
    return out_dir


def test_adapter_applies_and_merges(tiny_llama, tmp_path, encoder):
    adapter = _lora_adapter(tiny_llama, tmp_path / "adapter")
    with_adapter = LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=adapter)
    merged = LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=adapter, merge_peft=True)
    a = with_adapter.encode(TEXTS, show_progress_bar=False)
    assert not torch.allclose(a, encoder.encode(TEXTS, show_progress_bar=False), atol=1e-4)
    assert torch.allclose(a, merged.encode(TEXTS, show_progress_bar=False), atol=1e-4)


def test_adapter_that_does_not_fit_is_refused(model_root, tiny_llama, tmp_path):
    other = tiny.make_model_dir(model_root, "llama", name="tiny-llama-wide", hidden_size=48, intermediate_size=96)
    adapter = _lora_adapter(other, tmp_path / "wide-adapter")
    with pytest.raises(AdapterError, match="does not fit"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=adapter)


def test_corrupt_adapter_is_refused(tiny_llama, tmp_path):
    adapter = _lora_adapter(tiny_llama, tmp_path / "corrupt")
    weights = [f for f in os.listdir(adapter) if f.startswith("adapter_model")][0]
    (adapter / weights).write_bytes(b"this is not a safetensors file")
    with pytest.raises(AdapterError):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=adapter)
    with pytest.raises(AdapterError, match="not found"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=tmp_path / "nowhere")


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_every_architecture_encodes(model_root, arch):
    path = tiny.make_model_dir(model_root, arch)
    enc = LLM2Vec.from_pretrained(path, attn_implementation="eager")
    vecs = enc.encode(TEXTS, show_progress_bar=False)
    assert vecs.shape == (len(TEXTS), enc.hidden_size) and torch.isfinite(vecs).all()
    single = enc.encode([TEXTS[2]], show_progress_bar=False)
    assert torch.allclose(vecs[2], single[0], atol=1e-4)


def _rows(kwargs) -> int:
    return kwargs["input_ids"].shape[0]


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny_llama, monkeypatch):
    enc = LLM2Vec.from_pretrained(tiny_llama)
    texts = [TEXTS[0]] * 4 + TEXTS  # four equal rows: one batch of at least four
    expected = enc.encode(texts, batch_size=8, show_progress_bar=False)
    assert max(len(b.indices) for b in enc.plan(texts, batch_size=8).batches) >= 4
    real_forward = enc.model.forward
    seen = []

    def forward_with_small_memory(*args, **kwargs):
        seen.append((_rows(kwargs), kwargs["input_ids"].numel()))
        if _rows(kwargs) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(enc.model, "forward", forward_with_small_memory)
    with pytest.warns(UserWarning, match="out of memory"):
        got = enc.encode(texts, batch_size=8, show_progress_bar=False)
    assert torch.allclose(got, expected, atol=1e-5)
    failed = [tokens for rows, tokens in seen if rows > 2]
    assert failed
    # once a batch failed, none as large runs again: they are split before they run
    assert all(later < earlier for earlier, later in zip(failed, failed[1:]))


def test_out_of_memory_retry_leaves_the_settings_alone(tiny_llama, monkeypatch):
    enc = LLM2Vec.from_pretrained(tiny_llama, max_tokens_per_batch=4096)
    texts = [TEXTS[2]] * 6 + TEXTS
    expected = enc.encode(texts, batch_size=8, show_progress_bar=False)
    first = enc.plan(texts, batch_size=8).batches[0]
    assert len(first.indices) >= 2
    real_forward = enc.model.forward
    seen = []

    def forward_failing_once(*args, **kwargs):
        seen.append(_rows(kwargs))
        if len(seen) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(enc.model, "forward", forward_failing_once)
    with pytest.warns(UserWarning, match="out of memory"):
        got = enc.encode(texts, batch_size=8, show_progress_bar=False)
    assert torch.allclose(got, expected, atol=1e-5)
    assert seen[:3] == [len(first.indices), len(first.indices) // 2, len(first.indices) - len(first.indices) // 2]
    assert enc.max_tokens_per_batch == 4096
    # the next call plans and runs full batches again
    assert enc.plan(texts, batch_size=8).batches[0] == first
    seen.clear()
    enc.encode(texts, batch_size=8, show_progress_bar=False)
    assert seen[0] == len(first.indices)


def test_text_whose_pooled_part_is_empty_falls_back_to_all_tokens(encoder):
    # whitespace-only text after an instruction: nothing of the text survives, the vector stays finite
    vec = encoder.encode([["Represent the sentence:", "   "]], show_progress_bar=False)
    assert torch.isfinite(vec).all()
