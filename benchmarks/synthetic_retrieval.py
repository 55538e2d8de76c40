"""A local retrieval task with a generated corpus (20,000 documents by default), for ``eval_resume.py`` and
the embedding cache's resume tests; and a worker that evaluates it.

    python -m benchmarks.synthetic_retrieval MODEL_DIR OUTPUT --tasks A,B [--docs N] [--chunk N] [--overwrite]

prints one JSON line: per task, the texts encoded and reused and the main score.
``A`` and ``B`` share their corpus and differ in their queries.
"""
from __future__ import annotations

import argparse
import json
import random
from functools import lru_cache

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

DOCS = 20_000
QUERIES = 50
# The words documents are drawn from: plain English, so any tokenizer cuts them into a few tokens each.
WORDS = sorted(set("""
a about after along and announcement answer are at beach brown by capital cats city claim common countries dense
documents dog dogs embeddings encoders every fell find for fox france geography given guitar household in into is
jumps lazy learning machine man many map market models morning most numbers of on over paris passages pets playing
populous question quick refute relevant represent retrieve sea search searching sells sentence sentences sharply she
shells shore similarity stock street summer sunset text that the this to turn two vectors walking women
""".split()))


@lru_cache(maxsize=4)
def corpus(n_docs: int) -> tuple[dict, ...]:
    """Unique documents of 6-20 words (the number makes each one unique)."""
    rng = random.Random(0)
    return tuple({"id": f"d{i}", "title": "", "text": " ".join([*rng.choices(WORDS, k=rng.randint(5, 19)), str(i)])}
                 for i in range(n_docs))


def queries(n_docs: int, seed: int) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Queries that are one document each with a word left out, and that document as the relevant one."""
    rng = random.Random(seed)
    docs = corpus(n_docs)
    rows, relevant = [], {}
    for q in range(QUERIES):
        doc = docs[rng.randrange(n_docs)]
        words = doc["text"].split()
        del words[rng.randrange(len(words))]
        rows.append({"id": f"q{seed}-{q}", "text": " ".join(words)})
        relevant[rows[-1]["id"]] = {doc["id"]: 1}
    return rows, relevant


def _metadata(name: str) -> TaskMetadata:
    return TaskMetadata(
        name=name, description="Generated documents and queries (a test fixture, not a benchmark).",
        type="Retrieval", main_score="ndcg_at_10", task_subtypes=[], dataset={"path": "l2v/synthetic", "revision": "1"},
        category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], date=("2025-01-01", "2025-12-31"),
        domains=["Written"], dialect=[], license="mit", annotations_creators="LM-generated",
        sample_creation="created", modalities=["text"], bibtex_citation="",
        prompt={"query": "Given a question, retrieve relevant documents that best answer the question:"},
    )


class SyntheticRetrieval(AbsTaskRetrieval):
    metadata = _metadata("SyntheticRetrievalA")
    n_docs = DOCS
    query_seed = 1

    def load_data(self, num_proc: int | None = None, **kwargs) -> None:
        if self.data_loaded:
            return
        rows, relevant = queries(self.n_docs, self.query_seed)
        split = RetrievalSplitData(corpus=Dataset.from_list(list(corpus(self.n_docs))),
                                   queries=Dataset.from_list(rows), relevant_docs=relevant, top_ranked=None)
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class SyntheticRetrievalB(SyntheticRetrieval):
    metadata = _metadata("SyntheticRetrievalB")
    query_seed = 2


def make_tasks(names: str, n_docs: int = DOCS) -> list[SyntheticRetrieval]:
    classes = {"A": SyntheticRetrieval, "B": SyntheticRetrievalB}
    tasks = []
    for name in names.split(","):
        task = classes[name]()
        task.n_docs = n_docs
        tasks.append(task)
    return tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--tasks", default="A")
    parser.add_argument("--docs", type=int, default=DOCS)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--dtype", default="auto", help="as l2v-eval --dtype (auto: bf16 where the CPU has bf16 units)")
    args = parser.parse_args(argv)

    from l2v_eval.harness import EvalConfig, run_evaluation

    config = EvalConfig(model=args.model, tasks="custom", output=args.output, show_progress=False,
                        batch_size=args.batch_size, cache_chunk_texts=args.chunk, overwrite=args.overwrite,
                        dtype=args.dtype)
    summary = run_evaluation(config, tasks=make_tasks(args.tasks, args.docs))
    print(json.dumps({o.task: {"status": o.status, "encoded": o.encoded, "reused": o.reused, "score": o.main_score,
                               "seconds": round(o.seconds, 2)} for o in summary.outcomes}))


if __name__ == "__main__":
    main()
