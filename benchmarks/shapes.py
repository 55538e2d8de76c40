"""Model shapes the benchmarks build (random-init Llama weights), and what their figures need about them.

    tiny       hidden 64, 2 layers                                  - seconds, for checks of the scripts
    smollm2    SmolLM2-135M: hidden 576, 30 layers, 9 / 3 heads      - the CPU figures
    llama1b    Sheared-LLaMA-1.3B: hidden 2048, 24 layers, 16 heads  - GPU figures
    mistral7b  Mistral-7B: hidden 4096, 32 layers, 32 / 8 heads      - GPU figures
"""
from __future__ import annotations

import resource
from pathlib import Path

import torch

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32000),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True),
    "llama1b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=16,
                    num_key_value_heads=16, vocab_size=32000),
    "mistral7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=32000),
}
ALIASES = {"sheared-1.3b": "llama1b", "mistral-7b": "mistral7b"}

# Dense bf16/fp16 peak of the GPUs the targets are quoted on (vendor figures, TFLOP/s, no sparsity).
PEAK_TFLOPS_16BIT = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def llama_config(shape: str, **overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{**SHAPES[ALIASES.get(shape, shape)], "max_position_embeddings": 8192, "bos_token_id": 1,
                          "eos_token_id": 2, **overrides})


def flops(config, lengths) -> float:
    """Forward FLOPs of texts of these token counts: 2 per weight per token in the layers' matmuls, and
    4 * heads * head_dim * T per token per layer for full (bidirectional) attention over T tokens."""
    hidden, heads, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = config.num_key_value_heads or heads
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * config.intermediate_size
    linear = 2.0 * per_layer * layers
    attention = 4.0 * heads * head_dim * layers
    return sum(t * linear + t * t * attention for t in lengths)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense peak for ``dtype``, where it is known (listed GPUs, 16-bit types); else None."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for gpu, tflops in PEAK_TFLOPS_16BIT.items() if gpu in name), None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: the most memory torch allocated since the last reset. CPU: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def sample_tokenizer(vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on the shipped training samples (English prose), with the
    special tokens training needs; no download, and its ids fit every shape's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from l2v_core.training import sample_path

    texts = [line for name in ("fortunes.txt", "triples.jsonl")
             for line in Path(sample_path(name)).read_text().splitlines()]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])


def save_model(shape: str, root: Path) -> str:
    """A saved random-init model of ``shape`` with a tokenizer (``bundled``: the real model's name)."""
    if shape == "bundled":
        return "bundled"
    from transformers import LlamaForCausalLM

    from l2v_core.loading import bundled_gguf_path, load_tokenizer

    gguf = bundled_gguf_path() if shape == "smollm2" else None
    tokenizer = load_tokenizer(gguf) if gguf is not None else sample_tokenizer()
    config = llama_config(shape, vocab_size=max(len(tokenizer), SHAPES[shape]["vocab_size"]), rms_norm_eps=1e-5)
    torch.manual_seed(0)
    out = root / f"{shape}-shape"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
