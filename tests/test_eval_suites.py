"""Suites as one record (name, tasks, instructions, shipped baselines), the task kinds the harness
runs by, sample counting, and the scope of the local-data wrapper."""
from __future__ import annotations

import importlib
from pathlib import Path

import datasets
import mteb
import pytest

from l2v_eval import leaderboard
from l2v_eval.probes import PROBE_TASKS
from l2v_eval.sample_counts import count_samples, expected_texts, published_samples
from l2v_eval.tasks import mini, real, suites
from l2v_eval.tasks.bundled import suite_data_roots
from l2v_eval.tasks.kinds import MTEB, PROBE, task_kind
from l2v_eval.tasks.local import dataset_source
from l2v_eval.tasks.mini import MINI_TASK_NAMES, L2VMiniRetrieval, L2VMiniSTS
from l2v_eval.tasks.presets import PRESETS, resolve_tasks


def test_every_preset_is_a_suite_record_and_its_tasks_are_fresh():
    assert PRESETS == tuple(suites.SUITES) == ("mteb-en", "mteb-en-v2", "mteb-en-quick", "l2v-real", "l2v-mini",
                                               "probes")
    record = suites.SUITES["l2v-mini"]
    first, second = record.tasks(), record.tasks()
    assert [t.metadata.name for t in first] == list(MINI_TASK_NAMES)
    assert all(a is not b for a, b in zip(first, second))  # runs never share loaded data
    assert [t.metadata.name for t in suites.SUITES["mteb-en-quick"].tasks()] == list(suites.QUICK)
    assert len(suites.SUITES["mteb-en"].tasks()) == 56
    assert suites.bundled_task_names()[-len(MINI_TASK_NAMES):] == MINI_TASK_NAMES
    assert suite_data_roots() == {"l2v-real": Path(real.__file__).parent, "l2v-mini": Path(mini.__file__).parent}


def test_the_record_says_where_the_shipped_baselines_are():
    root = Path(leaderboard.__file__).resolve().parent
    assert suites.SUITES["l2v-mini"].baselines == root / "tasks" / "mini" / "baselines.csv"
    assert suites.SUITES["l2v-real"].baselines.is_file() and suites.SUITES["mteb-en"].baselines is None
    frame = suites.SUITES["l2v-real"].shipped_baselines()
    assert set(frame["task"]) == {t.metadata.name for t in suites.SUITES["l2v-real"].tasks()}
    assert leaderboard.shipped_baselines_path("l2v-real") == suites.SUITES["l2v-real"].baselines
    assert suites.SUITES["probes"].shipped_baselines() is None and leaderboard.shipped_baselines("custom") is None


def test_suite_names_and_benchmark_view():
    assert [suites.suite_name(s) for s in ("l2v-real", "Retrieval", "  probes ", "SciFact", "")] == [
        "l2v-real", "Retrieval", "probes", suites.CUSTOM, suites.CUSTOM]
    benchmark = suites.SUITES["l2v-mini"].benchmark()
    assert isinstance(benchmark, mteb.Benchmark) and benchmark.name == "l2v-mini"
    assert [t.metadata.name for t in benchmark.tasks] == list(MINI_TASK_NAMES)
    assert suites.SUITES["probes"].benchmark().tasks == []  # probes are not mteb tasks


def test_task_kinds_split_probes_from_mteb_tasks():
    tasks = resolve_tasks("probe-ner,L2VMiniSTS,BIOSSES")
    assert [task_kind(t) for t in tasks] == [PROBE, MTEB, MTEB]
    assert all(task_kind(t) == PROBE for t in PROBE_TASKS.values())


def test_samples_counted_from_data_and_from_mteb_statistics():
    sts, retrieval = L2VMiniSTS(), L2VMiniRetrieval()
    assert count_samples(sts) == {("test", "default"): None}  # not loaded: nothing to count
    sts.load_data()
    retrieval.load_data()
    assert count_samples(sts) == {("test", "default"): 60}
    split = retrieval.dataset["default"]["test"]
    n_retrieval = len(split["queries"]) + len(split["corpus"])
    assert count_samples(retrieval) == {("test", "default"): n_retrieval}
    assert expected_texts("STS", count_samples(sts)) == 120 and expected_texts("Retrieval", {}) is None
    biosses = mteb.get_task("BIOSSES")
    assert published_samples(biosses) == {("test", "default"): 100}  # mteb's shipped statistics


def test_local_data_wrapper_touches_only_the_task_loading_modules(tmp_path):
    abstask = importlib.import_module("mteb.abstasks.abstask")
    unrelated = importlib.import_module("mteb.tasks.reranking.eng.colder_reranking")
    original = datasets.load_dataset
    assert abstask.load_dataset is original and unrelated.load_dataset is original
    with dataset_source(tmp_path, "BIOSSES"):
        assert abstask.load_dataset is not original and datasets.load_dataset is not original
        assert unrelated.load_dataset is original  # another task's module is left alone
    assert abstask.load_dataset is original and datasets.load_dataset is original


@pytest.mark.parametrize("suite", ["l2v-real", "l2v-mini"])
def test_comparison_note_names_the_file_and_the_instructions(suite):
    record = suites.SUITES[suite]
    baselines = record.shipped_baselines()
    ours = baselines[baselines["model"] == baselines["model"].iloc[0]]
    names = [t.metadata.name for t in record.tasks()]
    note = leaderboard.comparison_table(ours, baselines, tasks=names, suite=suite).splitlines()[0]
    assert str(record.baselines.relative_to(Path(leaderboard.__file__).resolve().parents[1])) in note
    assert "measured with the default instructions" in note


def test_comparison_table_shows_the_dtype_of_every_row():
    record = suites.SUITES["l2v-real"]
    baselines = record.shipped_baselines()
    first = baselines["model"].iloc[0]
    ours = baselines[baselines["model"] == first].assign(experiment="dtype_bfloat16", model="local/mine")
    names = [t.metadata.name for t in record.tasks()]
    lines = leaderboard.comparison_table(ours, baselines, tasks=names, suite="l2v-real").splitlines()
    assert lines[1].split()[-1] == "dtype"
    assert lines[2].startswith("* local/mine") and lines[2].split()[-1] == "bfloat16"
    assert len(lines) == 2 + 1 + len(baselines[["model", "experiment"]].drop_duplicates())
    assert all(line.split()[-1] == "float32" for line in lines[3:])  # the shipped rows are fp32 runs
    assert leaderboard.run_dtype("attention_causal_dtype_float16") == "float16"
    assert leaderboard.run_dtype("") == leaderboard.run_dtype("attention_causal") == "float32"


def test_report_sections_open_with_the_suites_description(tmp_path):
    from l2v_eval.report import write_report
    from l2v_eval.results import ResultsStore

    ResultsStore(tmp_path / "results" / "l2v-mini").write(suites.SUITES["l2v-mini"].shipped_baselines())
    ResultsStore(tmp_path / "results" / "other").write(suites.SUITES["l2v-real"].shipped_baselines())
    md = write_report(tmp_path / "results", tmp_path / "report", baselines=False).read_text()
    section = md[md.index("## l2v-mini"):md.index("## other")]
    assert suites.SUITES["l2v-mini"].description in section
    assert suites.SUITES["l2v-real"].description not in md  # "other" is no suite l2v knows
    single = write_report(tmp_path / "results" / "l2v-mini", tmp_path / "single", baselines=False).read_text()
    assert suites.SUITES["l2v-mini"].description in single
