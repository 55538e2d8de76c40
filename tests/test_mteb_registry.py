"""mteb knows l2v's bundled tasks once l2v_eval is imported. mteb has no public registration function:
these tests fail when the private registry l2v_eval.tasks.mteb_registry fills changes in mteb."""
from __future__ import annotations

import importlib

import mteb
import pytest

import l2v_eval  # noqa: F401  (registers the bundled tasks)
from l2v_eval.tasks.mini import MINI_TASK_NAMES, MINI_TASKS
from l2v_eval.tasks.mteb_registry import register_tasks, suite_benchmark
from l2v_eval.tasks.real import REAL_TASK_NAMES


def test_mteb_still_has_the_registry_we_fill():
    module = importlib.import_module("mteb.get_tasks")
    assert isinstance(module._TASKS_REGISTRY, dict) and isinstance(module.TASK_LIST, tuple)
    assert module._TASKS_REGISTRY["STS12"] in module.TASK_LIST  # mteb's own tasks are where we add ours


def test_get_task_and_get_tasks_resolve_bundled_tasks():
    for name in (*REAL_TASK_NAMES, *MINI_TASK_NAMES):
        assert mteb.get_task(name).metadata.name == name
    assert [t.metadata.name for t in mteb.get_tasks(tasks=["L2VRealQuotePairs", "STS12"])] == [
        "L2VRealQuotePairs", "STS12"]
    reranking = {t.metadata.name for t in mteb.get_tasks(task_types=["Reranking"], languages=["eng"])}
    assert "L2VRealQuoteCompletion" in reranking


def test_registration_is_idempotent_and_refuses_a_taken_name():
    assert register_tasks() == []
    before = len(importlib.import_module("mteb.get_tasks").TASK_LIST)
    register_tasks(MINI_TASKS)
    assert len(importlib.import_module("mteb.get_tasks").TASK_LIST) == before

    class Impostor(MINI_TASKS[0]):
        pass

    with pytest.raises(ValueError, match="L2VMiniSTS"):
        register_tasks([Impostor])


def test_suite_benchmark_lists_the_suite():
    assert [t.metadata.name for t in suite_benchmark("l2v-real").tasks] == list(REAL_TASK_NAMES)
    with pytest.raises(ValueError, match="l2v-nope"):
        suite_benchmark("l2v-nope")


def test_mteb_s_own_summary_of_an_l2v_results_folder_lists_the_model(tiny_llama, tmp_path):
    """mteb drops models its registry does not know from its summary; l2v's results carry their ModelMeta."""
    from l2v_cli import eval as cli
    from l2v_eval.results import load_results
    from l2v_eval.tasks.mteb_registry import suite_summary

    out = tmp_path / "results"
    assert cli.main(["--model", str(tiny_llama), "--tasks", "l2v-mini", "--output", str(out), "--no-progress"]) == 0
    summary = suite_summary(out / "mteb", "l2v-mini")
    assert len(summary) == 1 and summary["Embedding Dimensions"].iloc[0] == 32
    table = load_results(out)
    ours = table[table.is_main_score].set_index("task_type")["value"]
    row = summary.iloc[0]
    for task_type in ("STS", "Classification", "PairClassification", "Retrieval", "Clustering"):
        assert row[task_type] == pytest.approx(ours[task_type], abs=1e-9)  # one task per type in l2v-mini
    assert row["Mean (Task)"] == pytest.approx(ours.mean(), abs=1e-9)
