"""Peak memory of preparing MNTP training data (read the text file, tokenize, cut blocks) as the file grows.

The data goes through memory-mapped Arrow tables (``datasets``), so peak memory should stay flat from a
10 MB file to a 100 MB one. Each size runs in a fresh process (peak resident memory is per process). Not a
test: nothing is asserted. The LAST line printed is one JSON object: {size_mb: {"peak_rss_mib", "seconds",
"blocks"}, ...}.

    python benchmarks/train_data_memory.py --sizes 10 100
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_file(path: Path, megabytes: int) -> None:
    from l2v_core.training import sample_path

    lines = Path(sample_path("fortunes.txt")).read_text(encoding="utf-8")
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < megabytes * 1_000_000:
            f.write(lines)


def prepare(path: str, cache: str) -> dict:
    """In this process: what MNTP does with the file before training, with the bundled model's tokenizer."""
    from l2v_core import loading
    from l2v_core.training.data import load_texts
    from l2v_core.training.mntp import tokenize_corpus

    tokenizer = loading.load_tokenizer(loading.resolve_source("bundled"))
    started = time.perf_counter()
    blocks = tokenize_corpus(load_texts(path, cache_dir=cache), tokenizer, 128, line_by_line=False)
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seconds": round(time.perf_counter() - started, 1), "blocks": len(blocks)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="file sizes in MB")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(prepare(*args.child)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"corpus-{size}mb.txt"
            make_file(data, size)
            run = subprocess.run([sys.executable, __file__, "--child", str(data), str(Path(tmp) / f"cache-{size}")],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if run.returncode:
                sys.exit(run.stderr[-2000:])
            results[size] = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{size} MB: {results[size]}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
