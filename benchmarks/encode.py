"""Encode throughput: l2v's encoder vs a naive padded loop and the dense ceiling, on one workload, in one run.

    python benchmarks/encode.py --shape smollm2                                   # CPU, dtype auto
    python benchmarks/encode.py --shape smollm2 --dtype bfloat16 --texts 1024     # CPU, bf16 forced
    python benchmarks/encode.py --shape mistral7b --device cuda --texts 4096      # GPU, bf16 (auto)

Builds the random-init model of the shape (benchmarks/shapes.py) with the word-level workload tokenizer
(one token per word, benchmarks/workload.py) and times, each --repeats times (figures are medians):
  padded    LLM2Vec.encode with padded batches: length-sorted, cut into (nearly) equal-length batches that
            run without a mask, left-padded and masked only where that is cheaper (LLM2Vec.plan)
  packed    LLM2Vec.encode with packed batches, where packing applies (a varlen attention backend on a
            GPU: flash_attention_2/3, flex_attention); null elsewhere
  naive     texts in input order, batches of --batch-size, each padded to its longest text and tokenized
            batch by batch (what a simple encoder loop does); on --naive-texts texts sampled from the
            workload (it is slow, and its tokens/s does not depend on how many texts it runs)
  ceiling   the workload sorted by length in batches of --batch-size texts, each batch run as rows of its
            mean length: no padding and no mask, the most this model does at these batch shapes
Every figure runs in one dtype (--dtype; auto: bf16 on a GPU or a CPU with bf16 units, else fp32, as l2v's own
default decides; the JSON's dtype is the one used). The defaults (256 texts, 64 naive texts, 3 repeats) keep a CPU
run of the smollm2 shape in fp32 to a few minutes.
Tokens/s count real tokens (padding never counts). The LAST line printed is one JSON object:
  shape device dtype attn texts tokens padded_tok_s packed_tok_s naive_tok_s dense_ceiling_tok_s
  packed_vs_padded fraction_of_ceiling peak_mem_gib mfu
fraction_of_ceiling is l2v's own path (packed where it applies, padded otherwise) over the ceiling.
peak_mem_gib: CUDA, the peak allocated while l2v encodes; CPU, the process's peak resident memory.
mfu: model FLOPs of l2v's path per second over the GPU's dense 16-bit peak (H100, H200, A100; null on a
CPU or another GPU). Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
import shapes  # noqa: E402
from l2v_core.dtypes import DTYPE_NAMES, dtype_name, resolve_dtype  # noqa: E402
from workload import make_corpus, make_tokenizer  # noqa: E402


def build_encoder(args, device, dtype):
    from transformers import LlamaModel

    from l2v_core import LLM2Vec, make_bidirectional

    texts, words = make_corpus(args.texts)
    tokenizer = make_tokenizer(words)
    config = shapes.llama_config(args.shape, vocab_size=max(len(tokenizer), shapes.SHAPES[args.shape]["vocab_size"]))
    config._attn_implementation = args.attn
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: a 7B model never exists in float32
    try:
        with torch.device(device):
            model = LlamaModel(config)
    finally:
        torch.set_default_dtype(default)
    make_bidirectional(model)
    return LLM2Vec(model.eval(), tokenizer, max_length=512, doc_max_length=None,
                   max_tokens_per_batch=args.max_tokens), texts


def timed(fn, device) -> float:
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
            batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=enc.max_length,
                        return_tensors="pt").to(device)
            states = enc.model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(states.dtype)
            (states * mask).sum(1) / mask.sum(1)


def ceiling_shapes(lengths: list[int], batch_size: int) -> list[tuple[int, int]]:
    """(rows, width) of each ceiling batch: length-sorted batches of ``batch_size``, rows of mean length."""
    ordered = sorted(lengths, reverse=True)
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    return [(len(b), max(1, round(sum(b) / len(b)))) for b in batches]


def ceiling(enc, batch_shapes, device):
    with torch.inference_mode():
        for rows, width in batch_shapes:
            ids = torch.randint(3, enc.model.config.vocab_size, (rows, width), device=device)
            enc.model(input_ids=ids).last_hidden_state.mean(1)


def describe(plan) -> str:
    layouts = [b.layout for b in plan.batches]
    counts = ", ".join(f"{layouts.count(k)} {k}" for k in ("dense", "padded", "packed") if k in layouts)
    return (f"{len(plan.batches)} batches ({counts}); {plan.computed_tokens - plan.num_tokens} padding tokens "
            f"({plan.computed_tokens / plan.num_tokens - 1:.1%})")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=[*shapes.SHAPES, *shapes.ALIASES], default="smollm2")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when present")
    p.add_argument("--texts", type=int, default=256, help="workload texts (the first N of the standard workload)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each figure; the median is reported")
    p.add_argument("--naive-texts", type=int, default=64, help="texts the naive loop runs (sampled; 0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=None, help="LLM2Vec max_tokens_per_batch (default: its own)")
    p.add_argument("--attn", default="sdpa", help="attention backend: sdpa, eager, flex_attention, flash_attention_2")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                   help="auto (default): bfloat16 on a GPU or a CPU with bf16 units, else float32")
    args = p.parse_args(argv)
    args.shape = shapes.ALIASES.get(args.shape, args.shape)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    args.requested_dtype = args.dtype
    args.dtype = dtype_name(resolve_dtype(args.dtype, args.device))
    if args.texts < 1 or args.repeats < 1:
        p.error("--texts and --repeats must be positive")
    return args


def measure(args, enc, texts, plan, device) -> tuple[dict, float, float]:
    """Tokens/s of each figure (medians), peak memory (GiB), and the median seconds of l2v's own path."""
    packs = any(b.packed for b in plan.batches)
    lengths = plan.lengths
    k = args.naive_texts if 0 < args.naive_texts < len(texts) else len(texts)
    sample = sorted(random.Random(0).sample(range(len(texts)), k))
    naive_texts = [texts[i] for i in sample]
    batch_shapes = ceiling_shapes(lengths, args.batch_size)

    def encode(packing):
        def run():
            enc.packing = packing
            enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False, device=device)
        return run

    figures = {"padded": encode(False)}
    if packs:
        figures["packed"] = encode(True)
    figures["naive"] = lambda: naive(enc, naive_texts, args.batch_size, device)
    figures["ceiling"] = lambda: ceiling(enc, batch_shapes, device)

    # warm-up: every path once on a slice
    enc.packing = None
    enc.encode(texts[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False, device=device)
    naive(enc, naive_texts[: args.batch_size], args.batch_size, device)
    ceiling(enc, batch_shapes[-1:], device)

    seconds = {name: [] for name in figures}
    peak = 0.0
    for r in range(args.repeats):
        for name, fn in figures.items():
            shapes.reset_peak_memory(device)
            seconds[name].append(timed(fn, device))
            if name in ("padded", "packed"):
                peak = max(peak, shapes.peak_memory_gib(device))
            print(f"repeat {r + 1}/{args.repeats} {name:8s} {seconds[name][-1]:8.2f} s", file=sys.stderr, flush=True)
    enc.packing = None
    median = {name: statistics.median(v) for name, v in seconds.items()}
    naive_tokens = sum(lengths[i] for i in sample)
    tok_s = {name: (naive_tokens if name == "naive" else sum(lengths)) / s for name, s in median.items()}
    return tok_s, peak, median["packed" if packs else "padded"]


def main(argv=None):
    args = parse(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    enc, texts = build_encoder(args, device, dtype)
    plan = enc.plan(texts, batch_size=args.batch_size, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    chosen = f"{args.dtype} ({args.requested_dtype})" if args.requested_dtype == "auto" else args.dtype
    print(f"{args.shape} on {where}, {chosen}, attn {args.attn}: {len(texts)} texts, {plan.num_tokens} tokens; "
          f"l2v plan: {describe(plan)}", flush=True)
    tok_s, peak, l2v_seconds = measure(args, enc, texts, plan, device)
    own = tok_s.get("packed", tok_s["padded"])
    peak_flops = shapes.peak_flops(device, dtype)
    mfu = shapes.flops(enc.model.config, plan.lengths) / l2v_seconds / peak_flops if peak_flops else None
    for name, value in tok_s.items():
        print(f"{name:8s} {value:12,.0f} tokens/s", flush=True)
    result = {
        "shape": args.shape, "device": device.type, "dtype": args.dtype, "attn": args.attn, "texts": len(texts),
        "tokens": plan.num_tokens,
        "padded_tok_s": round(tok_s["padded"], 1),
        "packed_tok_s": round(tok_s["packed"], 1) if "packed" in tok_s else None,
        "naive_tok_s": round(tok_s["naive"], 1),
        "dense_ceiling_tok_s": round(tok_s["ceiling"], 1),
        "packed_vs_padded": round(tok_s["packed"] / tok_s["padded"], 4) if "packed" in tok_s else None,
        "fraction_of_ceiling": round(own / tok_s["ceiling"], 4),
        "peak_mem_gib": round(peak, 3),
        "mfu": round(mfu, 4) if mfu is not None else None,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
