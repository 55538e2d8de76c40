"""Task specs, the paper's instruction table, and task data from --data-dir."""
from __future__ import annotations

import json
import shutil

import datasets
import mteb
import pytest
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.results import load_results
from l2v_eval.tasks.instructions import paper_instructions
from l2v_eval.tasks.local import MissingDatasetError, dataset_source, local_dataset_dir
from l2v_eval.tasks.mini import MINI_TASK_NAMES, read_jsonl
from l2v_eval.tasks.presets import PROBE_TASK_NAMES, UnknownTaskError, resolve_tasks, task_name


def names(spec):
    return [task_name(t) for t in resolve_tasks(spec)]


def test_presets_and_types():
    v1 = resolve_tasks("mteb-en")
    assert len(v1) == 56
    assert len(resolve_tasks("mteb-en-v2")) == 41
    by_name = {t.metadata.name: t for t in v1}
    assert by_name["STS17"].hf_subsets == ["en-en"]  # English subsets only, as the leaderboard
    assert by_name["MSMARCO"].eval_splits == ["dev"]
    sts = names("sts")
    assert len(sts) == 10 and "STSBenchmark" in sts and all(by_name[n].metadata.type == "STS" for n in sts)
    assert set(names("pair-classification")) == {"SprintDuplicateQuestions", "TwitterSemEval2015", "TwitterURLCorpus"}
    assert names("l2v-mini") == list(MINI_TASK_NAMES)
    assert names("probes") == list(PROBE_TASK_NAMES)
    quick = resolve_tasks("mteb-en-quick")
    assert 5 <= len(quick) <= 10 and len({t.metadata.type for t in quick}) >= 5
    # A comma list keeps its order, drops duplicates, and mixes presets with names.
    assert names("STS12, L2VMiniSTS,STS12,probe-pos") == ["STS12", "L2VMiniSTS", "probe-pos"]
    assert names("STS22.v2") == ["STS22.v2"]
    # Resolved tasks are independent objects: loading data into one leaves the other clean.
    a, b = resolve_tasks("STS12")[0], resolve_tasks("STS12")[0]
    assert a is not b


def test_unknown_names_list_close_matches():
    with pytest.raises(UnknownTaskError) as info:
        resolve_tasks("STSBenchmark,scifakt,totally-unknown-thing")
    message = str(info.value)
    assert "'scifakt'" in message and "SciFact" in message
    assert "'totally-unknown-thing'" in message and "no close match" in message
    assert "STSBenchmark" not in message.split("'scifakt'")[0]  # known names are not reported
    with pytest.raises(UnknownTaskError, match="empty"):
        resolve_tasks(" , ")


def test_paper_instruction_table_covers_the_english_benchmark():
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    table = paper_instructions()
    assert len(table) == 67
    for name in table:
        mteb.get_task(name)  # every key is a real mteb task
    for task in resolve_tasks("mteb-en"):
        parts = task.metadata.tasks if isinstance(task, AbsTaskAggregate) else [task]
        for part in parts:
            assert table[part.metadata.name].endswith(":"), part.metadata.name
    assert table["ArguAna"] == "Given a claim, find documents that refute the claim:"
    assert table["SummEval"] == "Given a news summary, retrieve other semantically similar summaries:"


def _save_scifact_layout(data_dir):
    """The bundled retrieval data in the layout of the hub dataset mteb/scifact (three configs)."""
    root = data_dir / "mteb__scifact"
    corpus = [{"_id": r["id"], "title": r["title"], "text": r["text"]} for r in read_jsonl("retrieval_corpus.jsonl")]
    queries = [{"_id": r["id"], "text": r["text"]} for r in read_jsonl("retrieval_queries.jsonl")]
    qrels = [{"query-id": r["query_id"], "corpus-id": r["doc_id"], "score": r["score"]}
             for r in read_jsonl("retrieval_qrels.jsonl")]
    datasets.DatasetDict({"corpus": datasets.Dataset.from_list(corpus)}).save_to_disk(root / "corpus")
    datasets.DatasetDict({"queries": datasets.Dataset.from_list(queries)}).save_to_disk(root / "queries")
    # qrels saved per split, the other layout --data-dir accepts
    datasets.Dataset.from_list(qrels).save_to_disk(root / "default" / "test")
    return len(corpus) + len(queries)


def test_mteb_task_reads_data_dir_and_scores_like_the_same_data_bundled(tiny_llama, tmp_path):
    data_dir = tmp_path / "data"
    n = _save_scifact_layout(data_dir)
    common = dict(model=str(tiny_llama), output=tmp_path / "out", instructions="none", show_progress=False)
    summary = run_evaluation(EvalConfig(tasks="SciFact,L2VMiniRetrieval", data_dir=data_dir, **common))
    assert summary.exit_code == 0, summary.format()
    table = load_results(tmp_path / "out")
    mains = table[table["is_main_score"]].set_index("task")
    assert mains.loc["SciFact", "n_samples"] == n
    # Same texts, same model, no instructions: SciFact's evaluator on this data gives the bundled task's score.
    assert mains.loc["SciFact", "value"] == pytest.approx(mains.loc["L2VMiniRetrieval", "value"])


def test_missing_data_names_the_task_and_folder(tmp_path):
    task = mteb.get_task("BIOSSES")
    with pytest.raises(MissingDatasetError) as info, dataset_source(tmp_path, "BIOSSES"):
        task.load_data()
    message = str(info.value)
    assert "BIOSSES" in message and "mteb/biosses-sts" in message
    assert str(local_dataset_dir(tmp_path, "mteb/biosses-sts", None)) in message
    assert datasets.load_dataset is not None and "l2v" not in datasets.load_dataset.__module__  # restored


class LocalFileSTS(AbsTaskSTS):
    """An STS task whose 'hub' dataset is a local folder of JSON lines (loadable without internet)."""

    min_score = 0
    max_score = 5

    def __init__(self, path, **kwargs):
        type(self).metadata = TaskMetadata(
            name="LocalFileSTS", description="Round trip of the download layout.", type="STS",
            main_score="cosine_spearman", dataset={"path": str(path), "revision": "local"},
            eval_splits=["test"], eval_langs=["eng-Latn"], category="t2t", modalities=["text"])
        super().__init__(**kwargs)


def test_download_writes_what_data_dir_reads(tmp_path):
    source = tmp_path / "hub-copy"
    source.mkdir()
    with open(source / "test.jsonl", "w") as f:
        for r in read_jsonl("sts.jsonl"):
            f.write(json.dumps(r) + "\n")
    data_dir = tmp_path / "data"
    task = LocalFileSTS(source)
    with dataset_source(data_dir, "LocalFileSTS", download=True):
        task.load_data()
    original = task.dataset["test"].to_list()
    shutil.rmtree(source)  # from now on only the saved copy exists

    again = LocalFileSTS(source)
    with dataset_source(data_dir, "LocalFileSTS"):
        again.load_data()
    assert again.dataset["test"].to_list() == original
    saved = json.loads((local_dataset_dir(data_dir, str(source), None) / "l2v_source.json").read_text())
    assert saved["revision"] == "local"
