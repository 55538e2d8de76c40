"""bf16 encoding against fp32 on real texts: how close the vectors stay, and at what speed, for each way of using bf16.

    python benchmarks/precision.py --model bundled --texts 192

Encodes a fixed sample of the l2v-real suite's texts (queries, documents and quotations, drawn with seed 0) with
one model, in each mode:
  float32    fp32 weights, fp32 compute: the reference vectors
  autocast   fp32 weights, matmuls in bf16 under torch.autocast; norms, softmax, residual sums and pooling in fp32
  bfloat16   weights cast to bf16 (what dtype bfloat16 loads); RMSNorm's statistics and pooling still in fp32
and reports, per mode, the cosine of each vector to its fp32 vector (min and mean) and tokens/s (median of
--repeats). The LAST line printed is one JSON object: model device texts tokens threads, then per mode
``<mode>_tok_s``, ``<mode>_cos_min``, ``<mode>_cos_mean``, and ``bf16_cpu_units`` (torch's check).
Figures, not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REAL = Path(__file__).resolve().parents[1] / "l2v_eval" / "tasks" / "real"
SOURCES = ("retrieval_queries.jsonl", "retrieval_corpus.jsonl", "clustering.jsonl", "reranking_queries.jsonl")
MODES = ("float32", "autocast", "bfloat16")


def sample_texts(n: int) -> list[str]:
    texts = []
    for name in SOURCES:
        with open(REAL / name, encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    return random.Random(0).sample(texts, min(n, len(texts)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bundled", help="any LLM2Vec.from_pretrained name (default: bundled)")
    p.add_argument("--texts", type=int, default=192, help="texts sampled from l2v-real")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per mode; tokens/s is their median")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)} (float32 always runs)")
    return p


def main(argv=None):
    from l2v_core import LLM2Vec
    from l2v_core.dtypes import torch_cpu_bf16_check

    args = build_parser().parse_args(argv)
    modes = ["float32", *[m for m in args.modes.split(",") if m and m != "float32"]]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"error: unknown --modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    texts = sample_texts(args.texts)
    enc = LLM2Vec.from_pretrained(args.model, dtype=torch.float32, max_length=args.max_length)
    device = enc.device
    tokens = enc.plan(texts, batch_size=args.batch_size).num_tokens
    result = {"model": args.model, "device": device.type, "texts": len(texts), "tokens": tokens,
              "threads": torch.get_num_threads(), "bf16_cpu_units": torch_cpu_bf16_check()}
    reference = None
    for mode in modes:  # bfloat16 last: it casts the weights in place
        if mode == "bfloat16":
            enc.model.to(torch.bfloat16)
        context = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if mode == "autocast" \
            else contextlib.nullcontext
        seconds, vectors = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            with context():
                vectors = enc.encode(texts, batch_size=args.batch_size, show_progress_bar=False)
            seconds.append(time.perf_counter() - start)
        reference = vectors if reference is None else reference
        cos = torch.nn.functional.cosine_similarity(vectors.float(), reference, dim=-1)
        result.update({f"{mode}_tok_s": round(tokens / statistics.median(seconds), 1),
                       f"{mode}_cos_min": round(cos.min().item(), 6), f"{mode}_cos_mean": round(cos.mean().item(), 6)})
        print(f"{mode:9s} {result[f'{mode}_tok_s']:9,.1f} tokens/s  cosine to fp32 min {result[f'{mode}_cos_min']:.6f}"
              f" mean {result[f'{mode}_cos_mean']:.6f}", file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
