"""MNTP: masking, the one-token shift, and a short real training run on a tiny model."""
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from l2v_core import LLM2Vec, make_bidirectional
from l2v_core.loading import load_tokenizer
from l2v_core.training import ConfigError, load_config, train
from l2v_core.training.mntp import (IGNORE, MNTPModel, make_collator, next_token_targets, resolve_mask_token,
                                    tokenize_corpus)
from tests import tiny


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    return load_tokenizer(str(tiny_llama))


def masked_batch(tokenizer, probability=0.3, line_by_line=False, seed=0, n=16):
    token, _ = resolve_mask_token(tokenizer, "_")
    from datasets import Dataset

    collator = make_collator(tokenizer, token, probability, seed)
    examples = list(tokenize_corpus(Dataset.from_dict({"text": tiny.CORPUS * 4}), tokenizer, 24, line_by_line))[:n]
    original = [list(e["input_ids"]) for e in examples]
    batch = collator([dict(e) for e in examples])
    return examples, original, batch


def test_label_of_position_i_is_token_i_plus_1(tokenizer):
    examples, original, batch = masked_batch(tokenizer)
    labels = batch["labels"]
    targets = next_token_targets(labels)
    assert (targets[:, -1] == IGNORE).all()
    checked = 0
    for b, ids in enumerate(original):
        for i in range(len(ids) - 1):
            if targets[b, i] != IGNORE:
                assert targets[b, i].item() == ids[i + 1]  # position i predicts the ORIGINAL token i+1
                assert labels[b, i + 1].item() == ids[i + 1]  # ... which is a masked token
                checked += 1
            else:
                assert labels[b, i + 1] == IGNORE
    assert checked > 20
    # The MLM labels themselves are unshifted: label i is original token i.
    masked = labels != IGNORE
    assert (labels[masked] == torch.tensor(original)[masked]).all()


def test_masking_is_bert_style_and_spares_special_and_pad_tokens(tokenizer):
    mask_token, mask_id = resolve_mask_token(tokenizer, "_")
    assert mask_token == "_" and mask_id == tokenizer.convert_tokens_to_ids("_")
    counts = {"mask": 0, "same": 0, "random": 0}
    for seed in range(20):
        examples, original, batch = masked_batch(tokenizer, probability=0.5, line_by_line=True, seed=seed)
        ids = torch.tensor([o + [tokenizer.eos_token_id] * (batch["input_ids"].shape[1] - len(o)) for o in original])
        labels, inputs = batch["labels"], batch["input_ids"]
        special = torch.zeros_like(labels, dtype=torch.bool)
        for b, e in enumerate(examples):
            special[b, :len(e["special_tokens_mask"])] = torch.tensor(e["special_tokens_mask"], dtype=torch.bool)
        pad = batch["attention_mask"] == 0
        assert pad.any() and special.any()
        assert (labels[special | pad] == IGNORE).all()  # BOS and padding are never targets
        assert (inputs[special | pad] == ids[special | pad]).all()  # ... nor altered
        masked = labels != IGNORE
        counts["mask"] += int((inputs[masked] == mask_id).sum())
        counts["same"] += int((inputs[masked] == ids[masked]).sum())
        counts["random"] += int(((inputs[masked] != mask_id) & (inputs[masked] != ids[masked])).sum())
    total = sum(counts.values())
    assert 0.75 < counts["mask"] / total < 0.85
    assert 0.06 < counts["same"] / total < 0.15 and 0.06 < counts["random"] / total < 0.15


def test_mask_token_choice(tokenizer):
    assert resolve_mask_token(tokenizer, "eos") == (tokenizer.eos_token, tokenizer.eos_token_id)
    with pytest.raises(ConfigError, match="not a single token"):
        resolve_mask_token(tokenizer, "<definitely-not-a-token>")
    with pytest.raises(ConfigError, match="has no pad token"):
        resolve_mask_token(tiny.make_tokenizer(), "pad")
    own = tiny.make_tokenizer()
    own.mask_token = "<unk>"  # a tokenizer with a mask token keeps it, whatever is configured
    assert resolve_mask_token(own, "_") == ("<unk>", own.unk_token_id)


def test_mntp_loss_is_the_causal_lm_loss_on_mlm_labels(tiny_llama, tokenizer):
    """Same quantity as the reference (a *ForCausalLM's shifted loss on MLM labels), computed
    only at the masked positions."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    make_bidirectional(lm)
    _, _, batch = masked_batch(tokenizer, line_by_line=True)
    mntp = MNTPModel(lm.model, lm.lm_head)
    with torch.no_grad():
        ours = mntp(batch["input_ids"], batch["attention_mask"], batch["labels"])
        reference = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_mntp_training_lowers_loss_and_writes_a_backbone_adapter(tiny_llama, toy_corpus, tmp_path):
    out = tmp_path / "mntp"
    config = load_config("mntp", None, dict(
        base_model=str(tiny_llama), train_file=str(toy_corpus), output_dir=str(out), max_steps=36, batch_size=8,
        max_length=32, learning_rate=1e-2, lr_scheduler="constant", save_steps=12, save_total_limit=2,
        merge_output=True, progress_bar=False))
    result = train("mntp", config)

    metrics = pd.read_csv(result.metrics_file)
    assert list(metrics.columns) == ["step", "loss", "lr", "tokens", "seconds"]
    assert metrics.step.tolist() == list(range(1, 37)) and (metrics.tokens == 8 * 32).all()
    first, last = metrics.loss.head(6).mean(), metrics.loss.tail(6).mean()
    assert last < first - 0.4, (first, last)

    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-24", "checkpoint-36"]
    keys = list(load_file(out / "adapter" / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.layers.") for k in keys)  # AutoModel keys, no LM head
    assert any("mlp.down_proj.lora_A" in k for k in keys) and any("self_attn.q_proj.lora_B" in k for k in keys)
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (16, 32)

    texts = ["A man is playing a guitar.", "Paris is the capital of France."]
    base = LLM2Vec.from_pretrained(str(tiny_llama)).encode(texts, show_progress_bar=False)
    with_adapter = LLM2Vec.from_pretrained(str(tiny_llama), peft_model_name_or_path=str(out / "adapter"))
    vectors = with_adapter.encode(texts, show_progress_bar=False)
    merged = LLM2Vec.from_pretrained(str(out)).encode(texts, show_progress_bar=False)
    assert not torch.allclose(base, vectors, atol=1e-3)  # training changed the encoder
    torch.testing.assert_close(vectors, merged, rtol=1e-4, atol=1e-4)
