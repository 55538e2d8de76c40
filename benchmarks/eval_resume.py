"""Resuming a big-corpus evaluation: texts encoded per run with the embedding cache.

    python benchmarks/eval_resume.py [--docs 20000] [--chunk 1000]

On the ``tiny`` random model of shapes.py and a generated retrieval task (synthetic_retrieval.py,
20,000 documents + 50 queries), each run a real ``l2v-eval`` process:

1. uninterrupted run of task A;
2. the same task in a fresh folder, killed with SIGKILL once about half the corpus is cached;
3. that run started again: it encodes only the remainder;
4. run 3 again with ``--overwrite``: everything is read from the cache;
5. task B (same corpus, other queries) beside run 1: only B's queries are encoded.

Scores of runs 1 and 3 are compared. The last line is one JSON object: texts encoded (and reused,
wall seconds) per run. Not a test; a figure.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def worker(model: Path, out: Path, tasks: str, args, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-m", "benchmarks.synthetic_retrieval", str(model), str(out), "--tasks", tasks,
           "--docs", str(args.docs), "--chunk", str(args.chunk), *extra]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def finished(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a run failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def cached_texts(cache: Path) -> int:
    from l2v_eval.cache_folder import describe

    return sum(s.texts for s in describe(cache)) if cache.is_dir() else 0


def kill_half_way(process: subprocess.Popen, cache: Path, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while cached_texts(cache) < target:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the run to be killed finished or stalled before reaching half the corpus")
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return cached_texts(cache)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000, help="texts per cache chunk")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds to wait for half the corpus")
    args = parser.parse_args(argv)

    import shapes
    from synthetic_retrieval import QUERIES

    with tempfile.TemporaryDirectory(prefix="l2v-eval-resume-") as work:
        work = Path(work)
        model = shapes.save_model("tiny", work)
        full, killed = work / "full", work / "killed"
        runs = {}
        start = time.monotonic()
        runs["uninterrupted"] = finished(worker(model, full, "A", args))["SyntheticRetrievalA"]
        print(f"1 uninterrupted: {runs['uninterrupted']}", flush=True)

        target = QUERIES + args.docs // 2
        cached = kill_half_way(worker(model, killed, "A", args), killed / "embedding-cache", target, args.timeout)
        runs["killed"] = {"cached_when_killed": cached}
        print(f"2 killed with {cached} of {args.docs + QUERIES} texts cached", flush=True)

        runs["resumed"] = finished(worker(model, killed, "A", args))["SyntheticRetrievalA"]
        print(f"3 resumed: {runs['resumed']}", flush=True)
        runs["second_run"] = finished(worker(model, killed, "A", args, "--overwrite"))["SyntheticRetrievalA"]
        print(f"4 second run (--overwrite): {runs['second_run']}", flush=True)
        runs["shared_corpus"] = finished(worker(model, full, "B", args))["SyntheticRetrievalB"]
        print(f"5 task B on the same corpus: {runs['shared_corpus']}", flush=True)

        result = {
            "docs": args.docs, "queries": QUERIES, "chunk": args.chunk,
            "encoded": {"uninterrupted": runs["uninterrupted"]["encoded"], "killed": cached,
                        "resumed": runs["resumed"]["encoded"], "second_run": runs["second_run"]["encoded"],
                        "shared_corpus_task": runs["shared_corpus"]["encoded"]},
            "reused": {name: runs[name]["reused"] for name in ("resumed", "second_run", "shared_corpus")},
            "seconds": {name: runs[name]["seconds"] for name in ("uninterrupted", "resumed", "second_run",
                                                                   "shared_corpus")},
            "resumed_score_equals_uninterrupted": runs["resumed"]["score"] == runs["uninterrupted"]["score"],
            "total_seconds": round(time.monotonic() - start, 1),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
