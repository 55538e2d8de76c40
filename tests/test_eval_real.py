"""The bundled real-text suite ``l2v-real``: shipped data, train/test separation, and that it tells models apart."""
import gzip
import json
import os

import pytest

from l2v_cli.eval import build_parser
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.results import load_results
from l2v_eval.tasks.presets import resolve_tasks
from l2v_eval.tasks.real import DATA_DIR, REAL_TASK_NAMES, TRAIN_DIR, build, real_tasks


def train_rows():
    with gzip.open(TRAIN_DIR / "pairs.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def unlabeled_texts():
    with gzip.open(TRAIN_DIR / "unlabeled.txt.gz", "rt", encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def test_the_suite_has_five_task_types_and_is_the_default():
    tasks = real_tasks()
    assert {t.metadata.type for t in tasks} == {"Retrieval", "PairClassification", "Classification", "Clustering",
                                                "Reranking"}
    assert [t.metadata.name for t in resolve_tasks("l2v-real")] == list(REAL_TASK_NAMES)
    assert build_parser().parse_args(["run", "--model", "m"]).tasks == "l2v-real"


def test_every_task_loads_its_shipped_data():
    sizes = {}
    for task in real_tasks():
        task.load_data()
        data = task.dataset
        if task.metadata.type in ("Retrieval", "Reranking"):
            split = data["default"]["test"]
            sizes[task.metadata.name] = (len(split["queries"]), len(split["corpus"]))
            assert all(split["relevant_docs"][q["id"]] for q in split["queries"])
            if task.metadata.type == "Reranking":
                assert all(len(ids) == 10 for ids in split["top_ranked"].values())
        else:
            sizes[task.metadata.name] = {name: len(rows) for name, rows in data.items()}
    assert sizes == {
        "L2VRealPackageRetrieval": (250, 493),
        "L2VRealQuotePairs": {"test": 300},
        "L2VRealPackageSection": {"train": 160, "test": 240},
        "L2VRealFortuneClustering": {"test": 378},
        "L2VRealQuoteCompletion": (300, 300),
    }


def read(name):
    with open(DATA_DIR / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_no_test_text_is_in_the_training_files():
    pairs, unlabeled = train_rows(), unlabeled_texts()
    trained = {r["query"] for r in pairs} | {r["positive"] for r in pairs} | {r["negative"] for r in pairs} | unlabeled
    test_texts = (
        [r["text"] for r in read("retrieval_queries.jsonl")]
        + [r["text"] for r in read("retrieval_corpus.jsonl")]
        + [r["text"] for r in read("clustering.jsonl")]
        + [r["text"] for r in read("reranking_queries.jsonl")]
        + [r["text"] for r in read("reranking_corpus.jsonl")]
        + [r[k] for r in read("pair_classification.jsonl") for k in ("sentence1", "sentence2")]
    )
    leaked = [t for t in test_texts if t in trained]
    assert not leaked, leaked[:3]
    assert {r["dataset"] for r in pairs} == {"packages", "fortunes", "bible"}
    assert all(r["negative"] != r["positive"] for r in pairs)


def test_split_and_cut_helpers():
    assert build.split_of("pkg:bash") == build.split_of("pkg:bash")
    shares = [build.split_of(f"k{i}") for i in range(2000)]
    assert 0.30 < shares.count("test") / len(shares) < 0.40
    head, tail = build._halve("Love is an ideal thing, marriage a real thing; a confusion of the real with the ideal "
                              "never goes unpunished.")
    assert head == "Love is an ideal thing, marriage a real thing;" and tail.startswith("a confusion")
    assert build._halve("Too short to cut.") is None
    candidates = [build.words(t) for t in ("red apples grow", "the tcl object system", "blue skies")]
    assert build.most_similar("object orientation for tcl", candidates, exclude=-1) == 1
    assert build.most_similar("object orientation for tcl", candidates, exclude=1) != 1


@pytest.mark.skipif(not os.path.isdir(build.FORTUNES_DIR), reason="Debian's fortunes package is not installed")
def test_quotations_come_from_the_fortunes_package():
    fortunes = {t for texts in build.read_fortunes().values() for t in texts}
    assert all(r["text"] in fortunes for r in read("clustering.jsonl"))
    pairs = {(r["query"], r["positive"]) for r in train_rows() if r["dataset"] == "fortunes"}
    assert all(f"{q} {p}" in fortunes for q, p in list(pairs)[:200])


def main_scores(out):
    table = load_results(out)
    return table[table["is_main_score"]].set_index("task")["value"]


@pytest.mark.slow
def test_every_task_discriminates(tiny_llama, tmp_path, minilm_dir):
    """all-MiniLM-L6-v2 stays below each metric's ceiling, and a random-init encoder well below MiniLM."""
    for model, out in ((minilm_dir, tmp_path / "minilm"), (tiny_llama, tmp_path / "random")):
        summary = run_evaluation(EvalConfig(model=str(model), tasks="l2v-real", output=out, show_progress=False))
        assert summary.exit_code == 0, summary.format()
    minilm, random_init = main_scores(tmp_path / "minilm"), main_scores(tmp_path / "random")
    assert set(minilm.index) == set(REAL_TASK_NAMES)
    for task in REAL_TASK_NAMES:
        assert minilm[task] < 0.95, (task, minilm[task])
        assert random_init[task] < minilm[task] - 0.1, (task, random_init[task], minilm[task])
