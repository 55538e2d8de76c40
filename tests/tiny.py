"""Tiny random-init decoders and a locally trained tokenizer, saved to disk.

Tests load them back through the same ``from_pretrained`` path a user takes, so
the real loading code is exercised without any download.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "Two women are walking along the beach at sunset.",
    "Retrieve passages that answer the question about geography.",
    "Paris is the capital and most populous city of France.",
    "The stock market fell sharply after the announcement.",
    "Given a claim, find documents that refute the claim.",
    "Represent this sentence for searching relevant passages:",
    "Machine learning models turn text into vectors of numbers.",
    "She sells sea shells by the sea shore every summer morning.",
    "Encoders map sentences to dense embeddings for similarity search.",
    "Cats and dogs are common household pets in many countries.",
]

# Texts in groups of equal token counts, plus odd ones, and instruction pairs: the batch planner makes batches of
# every layout (dense and padded; packed where asked) from them.
LAYOUT_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    ["Retrieve passages that answer the question:", "Paris is the capital and most populous city of France."],
    "The quick brown dog jumps over the lazy fox.",
    "Cats and dogs.",
    "The lazy brown fox jumps over the quick dog.",
    ["Given a claim, find documents that refute the claim:", "The stock market fell sharply after the announcement."],
    "Two women are walking along the beach at sunset.",
    "Cats and cats.",
    "A man is playing a guitar on the street.",
]

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")


@functools.lru_cache(maxsize=None)
def _tokenizer_json(add_bos: bool) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def make_tokenizer(add_bos: bool = True):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(add_bos)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


def make_config(arch: str, vocab_size: int, layers: int = 2, **overrides):
    import transformers as tf

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    classes = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma": tf.GemmaConfig,
        "gemma2": tf.Gemma2Config,
    }
    if arch in ("qwen3", "gemma", "gemma2"):
        common["head_dim"] = 8
    if arch == "mistral":
        common["sliding_window"] = None
    if arch == "gemma2":
        common["sliding_window"] = 512
    common.update(overrides)
    return classes[arch](**common)


def make_model_dir(root: os.PathLike, arch: str = "llama", seed: int = 0, add_bos: bool = True,
                   layers: int = 2, name: str | None = None, **config_overrides) -> Path:
    """Write a random-init ``<arch>ForCausalLM`` and its tokenizer to ``root/name``."""
    from transformers import AutoModelForCausalLM

    out = Path(root) / (name or f"tiny-{arch}-{seed}")
    if (out / "config.json").exists():
        return out
    tokenizer = make_tokenizer(add_bos=add_bos)
    config = make_config(arch, len(tokenizer), layers=layers, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    # Random init gives tiny weights; widen them so tokens really interact and
    # differences between masks show up far above float noise.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
