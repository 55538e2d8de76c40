"""The embedding cache: chunk files that check themselves, resume after kill -9 mid-corpus, no text
encoded twice (re-runs, tasks sharing a corpus), torchrun ranks writing their own shards, and the
``l2v-eval cache`` command."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l2v_cli.eval import main
from l2v_eval.cache_folder import describe
from l2v_eval.embedding_cache.chunks import HEADER, SUFFIX, CorruptChunk, read_chunk, text_keys, write_chunk
from l2v_eval.embedding_cache.store import ChunkStore
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.model import ModelSpec
from l2v_eval.results import load_results
from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS
from benchmarks import synthetic_retrieval

ROOT = Path(__file__).resolve().parents[1]


def vectors(n, dim=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


# ---------------------------------------------------------------------- chunk files and the store
def test_store_round_trip_dedupes_and_sees_other_writers(tmp_path):
    texts = ["a", "b", "c", ""]
    keys, vecs = text_keys(texts), vectors(4)
    one = ChunkStore(tmp_path)
    one.append(keys[:2], vecs[:2])
    other = ChunkStore(tmp_path)  # another process, e.g. another rank: its own file names
    other.append(keys[2:], vecs[2:])
    assert len(list(tmp_path.glob(f"*{SUFFIX}"))) == 2 and one.writer != other.writer

    found, got = one.read(text_keys(["c", "a", "zzz", "", "a"]))
    assert found.tolist() == [True, True, False, True, True]
    np.testing.assert_array_equal(got[[0, 1, 3, 4]], vecs[[2, 0, 3, 0]])
    assert not ChunkStore(tmp_path / "empty").read(keys)[0].any()


def test_truncated_and_corrupt_chunks_are_never_served(tmp_path, caplog):
    keys, vecs = text_keys([f"t{i}" for i in range(6)]), vectors(6)
    store = ChunkStore(tmp_path)
    first, second = store.append(keys[:3], vecs[:3]), store.append(keys[3:], vecs[3:])
    with open(first, "r+b") as f:  # a killed copy: the file is shorter than its header says
        f.truncate(first.stat().st_size - 5)
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a vector
    second.write_bytes(bytes(data))
    with pytest.raises(CorruptChunk, match="truncated"):
        read_chunk(first)
    with pytest.raises(CorruptChunk, match="vectors checksum"):
        read_chunk(second)

    with caplog.at_level(logging.WARNING, logger="l2v_eval.embedding_cache"):
        found, _ = ChunkStore(tmp_path).read(keys)
    assert not found.any()
    assert str(first) in caplog.text and str(second) in caplog.text and "encoded again" in caplog.text
    assert not first.exists() and not second.exists()


def test_header_is_what_the_format_says(tmp_path):
    path = tmp_path / f"x{SUFFIX}"
    write_chunk(path, text_keys(["a", "b"]), vectors(2, dim=3))
    magic, rows, width, *_ = HEADER.unpack(path.read_bytes()[:HEADER.size])
    assert (magic, rows, width) == (b"L2VEMB01", 2, 3)
    assert path.stat().st_size == HEADER.size + 2 * 32 + 2 * 3 * 4


def test_store_plugs_into_mtebs_own_wrapper(tiny_llama, tmp_path):
    """ChunkStore implements mteb's CacheBackendProtocol: the stock CachedEmbeddingWrapper runs on it."""
    import mteb
    from mteb.models.cache_wrappers import CacheBackendProtocol, CachedEmbeddingWrapper

    from l2v_eval.encoder_adapter import L2VEncoder

    assert isinstance(ChunkStore(tmp_path / "p"), CacheBackendProtocol)
    encoder = L2VEncoder(ModelSpec.resolve(str(tiny_llama)), batch_size=16, show_progress_bar=False)
    calls = []
    encode = encoder.encode
    encoder.encode = lambda inputs, **kw: calls.append(len(inputs.dataset)) or encode(inputs, **kw)
    scores, n_calls = [], []
    for _ in range(2):
        wrapped = CachedEmbeddingWrapper(encoder, tmp_path / "stock", cache_backend=ChunkStore)
        result = mteb.evaluate(wrapped, L2VMiniSTS(), cache=None, co2_tracker=False, show_progress_bar=False,
                               encode_kwargs={"show_progress_bar": False})
        scores.append(result.task_results[0].get_score())
        n_calls.append(len(calls))
    assert n_calls[0] > 0 and n_calls[1] == n_calls[0]  # the second evaluation was served from the chunk files
    assert scores[0] == scores[1]


# ---------------------------------------------------------------------- kill -9 mid-corpus, resume, reuse
class Spy:
    """Counts the texts that reach the real model."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, sentences, **kwargs):
        self.texts += len(sentences)
        return self.inner.encode(sentences, **kwargs)


LOAD = ModelSpec.load


def counted_run(model, out, tasks, monkeypatch, **kwargs):
    spies = []
    monkeypatch.setattr(ModelSpec, "load", lambda self: spies.append(Spy(LOAD(self))) or spies[-1])
    config = EvalConfig(model=str(model), tasks="custom", output=out, show_progress=False, batch_size=64,
                        cache_chunk_texts=1000, **kwargs)
    summary = run_evaluation(config, tasks=synthetic_retrieval.make_tasks(tasks))
    assert summary.exit_code == 0, summary.format()
    return summary, sum(s.texts for s in spies)


def cached_texts(cache: Path) -> int:
    return sum(s.texts for s in describe(cache)) if cache.is_dir() else 0


def test_killed_run_resumes_mid_corpus_and_nothing_is_encoded_twice(tiny_llama, tmp_path, monkeypatch):
    n_docs, n_queries = synthetic_retrieval.DOCS, synthetic_retrieval.QUERIES
    # Uninterrupted, two tasks sharing one corpus: the corpus is encoded once.
    full, full_texts = counted_run(tiny_llama, tmp_path / "full", "A,B", monkeypatch)
    a, b = full.outcomes
    assert (a.encoded, a.reused) == (n_docs + n_queries, 0)
    assert (b.encoded, b.reused) == (n_queries, n_docs)
    assert full_texts == n_docs + 2 * n_queries

    # kill -9 a real run once about half the corpus is in the cache.
    out = tmp_path / "killed"
    cache = out / "embedding-cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "benchmarks.synthetic_retrieval", str(tiny_llama), str(out),
                               "--tasks", "A", "--chunk", "1000", "--dtype", "float32"],  # as the resume below
                              env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    try:
        while cached_texts(cache) < n_queries + n_docs // 2:
            assert worker.poll() is None, f"the run ended before it was killed: {worker.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not get half way in 600 s"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    done_before = cached_texts(cache)
    assert n_queries + n_docs // 2 <= done_before < n_queries + n_docs
    assert not (out / "scores.parquet").exists()

    resumed, resumed_texts = counted_run(tiny_llama, out, "A", monkeypatch)
    (outcome,) = resumed.outcomes
    remainder = n_docs + n_queries - done_before
    assert (outcome.encoded, outcome.reused) == (remainder, done_before)
    assert resumed_texts == remainder  # counted where the texts reach the model
    pd.testing.assert_series_equal(scores_of(out, "SyntheticRetrievalA"), scores_of(tmp_path / "full", "SyntheticRetrievalA"))

    again, again_texts = counted_run(tiny_llama, out, "A", monkeypatch, overwrite=True)
    assert (again.outcomes[0].encoded, again.outcomes[0].reused, again_texts) == (0, n_docs + n_queries, 0)
    assert cached_texts(cache) == n_docs + n_queries  # no text stored twice


def scores_of(out: Path, task: str) -> pd.Series:
    table = load_results(out)
    return table[table["task"] == task].set_index("metric")["value"].sort_index()


def test_a_corrupt_chunk_is_recomputed_with_the_same_scores(tiny_llama, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    tasks = [L2VMiniSTS(), L2VMiniRetrieval()]
    config = dict(model=str(tiny_llama), tasks="custom", output=out, show_progress=False, batch_size=16,
                  cache_chunk_texts=16)
    first = run_evaluation(EvalConfig(**config), tasks=tasks)
    before = load_results(out)
    victim = sorted((out / "embedding-cache").rglob(f"*{SUFFIX}"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    with caplog.at_level(logging.WARNING, logger="l2v_eval.embedding_cache"):
        second = run_evaluation(EvalConfig(**config, overwrite=True), tasks=[L2VMiniSTS(), L2VMiniRetrieval()])
    assert str(victim) in caplog.text
    assert sum(o.encoded for o in first.outcomes) > sum(o.encoded for o in second.outcomes) > 0
    key = ["task", "metric"]
    merged = before.merge(load_results(out), on=key, suffixes=("_a", "_b"))
    assert len(merged) == len(before) and (merged["value_a"] == merged["value_b"]).all()


# ---------------------------------------------------------------------- torchrun: a shard per rank
def test_torchrun_ranks_write_their_own_shards_and_clean_up(tiny_llama, tmp_path, monkeypatch):
    out, scratch = tmp_path / "two", tmp_path / "tmp"
    scratch.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29641",
           "--no-python", sys.executable, "-m", "l2v_cli.eval", "--model", str(tiny_llama),
           "--tasks", "L2VMiniSTS,L2VMiniRetrieval", "--output", str(out), "--no-progress", "--batch-size", "4",
           "--dtype", "float32"]  # the in-process re-run below resolves auto as fp32, whatever this processor has
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    writers = {p.name.split("-")[0] for p in (out / "embedding-cache").rglob(f"*{SUFFIX}")}
    assert writers == {"r00000", "r00001"}
    assert not [p for p in scratch.iterdir() if p.name.startswith("l2v-eval-rank")]  # rank 1's snapshot is gone

    # One process reads both ranks' shards: nothing is encoded again.
    spies = []
    monkeypatch.setattr(ModelSpec, "load", lambda self: spies.append(Spy(LOAD(self))) or spies[-1])
    rerun = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="custom", output=out, show_progress=False,
                                      overwrite=True), tasks=[L2VMiniSTS(), L2VMiniRetrieval()])
    assert [o.encoded for o in rerun.outcomes] == [0, 0], rerun.format()
    assert sum(s.texts for s in spies) == 0


# ---------------------------------------------------------------------- l2v-eval cache
def test_cache_info_and_clear(tiny_llama, tmp_path, capsys):
    results = tmp_path / "results"
    out = results / "l2v-mini"
    assert main(["--model", str(tiny_llama), "--tasks", "L2VMiniSTS", "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"Embedding cache: {out / 'embedding-cache'} (" in printed

    assert main(["cache", "info", str(results)]) == 0
    info = capsys.readouterr().out
    assert "local/tiny-llama-0" in info and "'Retrieve semantically similar text:'" in info
    assert f"{len(set(json_texts()))} texts" in info  # every distinct STS sentence, once

    (tmp_path / "not-a-cache").mkdir()
    assert main(["cache", "clear", str(tmp_path / "not-a-cache")]) == 2
    assert "neither is nor holds an l2v embedding cache; nothing deleted" in capsys.readouterr().err
    assert main(["cache", "clear", str(results)]) == 0
    assert "Deleted l2v's files in" in capsys.readouterr().out
    assert not (out / "embedding-cache").exists() and (out / "scores.parquet").is_file()


def json_texts() -> list[str]:
    from l2v_eval.tasks.mini import read_jsonl

    return [t for row in read_jsonl("sts.jsonl") for t in (row["sentence1"], row["sentence2"])]


def test_causal_and_bidirectional_runs_never_share_vectors(tiny_llama):
    """Attention direction decides the vectors, so a --causal run never reads a bidirectional run's cache."""
    from types import SimpleNamespace

    from l2v_eval.encoder_adapter import encoder_settings

    def settings(**kwargs):
        spec = ModelSpec.resolve(str(tiny_llama), **kwargs)
        return encoder_settings(SimpleNamespace(mteb_model_meta=spec.model_meta(), spec=spec))

    assert settings(causal=True) != settings() == settings(causal=False)
    assert settings(causal=True)["causal"] is True
