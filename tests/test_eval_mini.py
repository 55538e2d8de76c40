"""The bundled l2v-mini suite end to end with a tiny random decoder: the tidy table, its
agreement with mteb's JSON, resuming, failures, instructions."""
from __future__ import annotations

import json
import math

import mteb
import pandas as pd
import pytest

from l2v_cli.eval import main
from l2v_eval.harness import EvalConfig, Evaluation, run_evaluation
from l2v_eval.model import ModelSpec
from l2v_eval.results import COLUMNS, KEY, load_results
from l2v_eval.tasks.instructions import load_instructions
from l2v_eval.tasks.mini import (
    MINI_TASK_NAMES,
    L2VMiniPairClassification,
    L2VMiniRetrieval,
    L2VMiniSTS,
    read_jsonl,
)

# Texts (or pairs) per task in the bundled data, counted from the files themselves.
EXPECTED_SAMPLES = {
    "L2VMiniSTS": len(read_jsonl("sts.jsonl")),
    "L2VMiniClassification": sum(r["split"] == "test" for r in read_jsonl("classification.jsonl")),
    "L2VMiniPairClassification": len(read_jsonl("pair_classification.jsonl")),
    "L2VMiniRetrieval": len(read_jsonl("retrieval_corpus.jsonl")) + len(read_jsonl("retrieval_queries.jsonl")),
    "L2VMiniClustering": len(read_jsonl("clustering.jsonl")),
}


def config(model, output, **kwargs) -> EvalConfig:
    return EvalConfig(model=str(model), tasks=kwargs.pop("tasks", "l2v-mini"), output=output,
                      show_progress=False, batch_size=16, **kwargs)


@pytest.fixture(scope="module")
def mini_run(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    summary = run_evaluation(config(tiny_llama, out))
    return out, summary


def test_suite_runs_and_table_has_the_schema(mini_run):
    out, summary = mini_run
    assert summary.exit_code == 0, summary.format()
    assert [o.task for o in summary.outcomes] == list(MINI_TASK_NAMES)
    assert all(o.status == "ok" for o in summary.outcomes)

    table = pd.read_parquet(out / "scores.parquet")
    assert list(table.columns) == list(COLUMNS)
    csv = load_results(out / "scores.csv")
    assert len(csv) == len(table)
    assert set(table["task"]) == set(MINI_TASK_NAMES)
    assert not table.duplicated(list(KEY)).any()
    assert (table["status"] == "ok").all() and table["layer"].isna().all()
    assert (table["model"] == "local/tiny-llama-0").all()
    assert table["model_revision"].nunique() == 1 and table["experiment"].eq("").all()
    assert table["value"].notna().all() and table["eval_seconds"].gt(0).all()
    assert table["languages"].eq("eng-Latn").all()
    pd.to_datetime(table["created_at"])  # ISO timestamps
    mains = table[table["is_main_score"]]
    assert len(mains) == len(MINI_TASK_NAMES)  # one split, one subset each
    assert dict(zip(mains["task"], mains["metric"])) == {
        "L2VMiniSTS": "cosine_spearman", "L2VMiniClassification": "accuracy",
        "L2VMiniPairClassification": "max_ap", "L2VMiniRetrieval": "ndcg_at_10", "L2VMiniClustering": "v_measure"}
    assert dict(zip(mains["task"], mains["n_samples"])) == EXPECTED_SAMPLES


def test_table_values_equal_mteb_json(mini_run):
    out, _ = mini_run
    table = load_results(out)
    revision = table["model_revision"].iloc[0]
    folder = out / "mteb" / "results" / "local__tiny-llama-0" / revision  # mteb's own cache layout under mteb/
    checked = 0
    for task in MINI_TASK_NAMES:
        saved = json.loads((folder / f"{task}.json").read_text())
        (entry,) = saved["scores"]["test"]
        rows = table[table["task"] == task].set_index("metric")["value"]
        for metric, value in entry.items():
            if metric == "main_score" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isnan(value):  # undefined metrics are left out of the table
                assert metric not in rows
            else:
                assert rows[metric] == pytest.approx(value, rel=1e-12, abs=1e-12), (task, metric)
                checked += 1
        main = table[(table["task"] == task) & table["is_main_score"]]["value"].item()
        assert main == pytest.approx(entry["main_score"])
        assert table[table["task"] == task]["eval_seconds"].iloc[0] == pytest.approx(saved["evaluation_time"])
    assert checked > 100


def test_rerun_skips_everything_without_loading_the_model(mini_run, tiny_llama):
    out, _ = mini_run
    before = load_results(out)
    evaluation = Evaluation(config(tiny_llama, out))
    summary = evaluation.run()
    assert [o.status for o in summary.outcomes] == ["skipped"] * len(MINI_TASK_NAMES)
    assert not evaluation.encoder.loaded
    pd.testing.assert_frame_equal(load_results(out), before)


class BrokenPairClassification(L2VMiniPairClassification):
    def load_data(self, *args, **kwargs):
        raise RuntimeError("the pair file is corrupt")


def test_failure_is_recorded_run_goes_on_and_resume_finishes(tiny_llama, tmp_path):
    out = tmp_path / "res"
    first = run_evaluation(config(tiny_llama, out), tasks=[L2VMiniSTS(), BrokenPairClassification(), L2VMiniRetrieval()])
    assert first.exit_code == 1
    assert [o.status for o in first.outcomes] == ["ok", "error", "ok"]
    assert "RuntimeError: the pair file is corrupt" in first.format()
    table = load_results(out)
    failure = table[table["status"] == "error"]
    assert list(failure["task"]) == ["L2VMiniPairClassification"]
    assert "the pair file is corrupt" in failure["error"].item()
    assert math.isnan(failure["value"].item())
    sts_before = table[table["task"] == "L2VMiniSTS"]

    second = run_evaluation(config(tiny_llama, out), tasks=[L2VMiniSTS(), L2VMiniPairClassification(), L2VMiniRetrieval()])
    assert second.exit_code == 0
    assert [o.status for o in second.outcomes] == ["skipped", "ok", "skipped"]
    table = load_results(out)
    assert (table["status"] == "ok").all()  # the failure row is gone
    assert set(table["task"]) == {"L2VMiniSTS", "L2VMiniPairClassification", "L2VMiniRetrieval"}
    pd.testing.assert_frame_equal(table[table["task"] == "L2VMiniSTS"].reset_index(drop=True),
                                  sts_before.reset_index(drop=True))

    third = run_evaluation(config(tiny_llama, out, tasks="L2VMiniSTS", overwrite=True))
    assert [o.status for o in third.outcomes] == ["ok"]
    redone = load_results(out)
    redone = redone[redone["task"] == "L2VMiniSTS"]
    assert (redone["created_at"] >= sts_before["created_at"].iloc[0]).all()
    # Same model, same data: recomputing gives the same numbers.
    assert redone.set_index("metric")["value"].to_dict() == pytest.approx(
        sts_before.set_index("metric")["value"].to_dict())


class Spy:
    """Records what the harness hands to the real model."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def encode(self, sentences, **kwargs):
        self.calls.append(list(sentences))
        return self.inner.encode(sentences, **kwargs)


def test_instructions_reach_llm2vec_as_pairs(tiny_llama, tmp_path, monkeypatch):
    load = ModelSpec.load
    spies = []
    monkeypatch.setattr(ModelSpec, "load", lambda self: spies.append(Spy(load(self))) or spies[-1])
    summary = run_evaluation(config(tiny_llama, tmp_path / "out"), tasks=[L2VMiniSTS(), L2VMiniRetrieval()])
    assert summary.exit_code == 0
    (spy,) = spies
    sts_a, sts_b, queries, docs = spy.calls
    assert all(isinstance(p, list) and len(p) == 2 for call in spy.calls for p in call)
    assert {p[0] for p in sts_a + sts_b} == {"Retrieve semantically similar text:"}
    assert {p[0] for p in queries} == {"Given a question, retrieve relevant documents that best answer the question:"}
    assert {p[0] for p in docs} == {""}  # documents never get an instruction
    assert "How do bees make honey?" in {p[1] for p in queries}
    assert any(p[1].startswith("Honey bees Honey bees live") for p in docs)  # title + " " + body
    assert sum(p[1] == " " for p in docs) == 1  # the empty document, encoded as a single space


def test_instruction_modes_and_their_result_folders(tiny_llama, tmp_path):
    from mteb.types import PromptType

    sts, retrieval = L2VMiniSTS().metadata, L2VMiniRetrieval().metadata
    banking = mteb.get_task("Banking77Classification").metadata
    arxiv = mteb.get_task("ArXivHierarchicalClusteringS2S").metadata  # not in the paper's table, no prompt
    fever_hn = mteb.get_task("FEVERHardNegatives").metadata  # adapted from FEVER
    stack_v2 = mteb.get_task("StackExchangeClustering.v2").metadata

    default = load_instructions("default")
    assert default.for_task(banking, None) == "Given a online banking query, find the corresponding intents:"
    assert default.for_task(retrieval, PromptType.query).startswith("Given a question, retrieve")
    assert default.for_task(retrieval, PromptType.document) == ""
    assert default.for_task(fever_hn, PromptType.query) == default.for_task(
        mteb.get_task("FEVER").metadata, PromptType.query) == "Given a claim, retrieve documents that support or refute the claim:"
    assert default.for_task(stack_v2, None) == "Identify the topic or theme of StackExchange posts based on the titles:"
    assert default.for_task(arxiv, None) == ""

    none = load_instructions("none")
    assert none.for_task(banking, None) == none.for_task(retrieval, PromptType.query) == ""

    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"L2VMiniRetrieval": "Find the passage:", "STS": "Same meaning?"}))
    mine = load_instructions(str(path))
    assert mine.for_task(retrieval, PromptType.query) == "Find the passage:"
    assert mine.for_task(sts, None) == "Same meaning?"  # keyed by task type
    assert mine.for_task(banking, None) == ""  # a file replaces the paper's table

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"STS12": 3}))
    with pytest.raises(ValueError, match="STS12"):
        load_instructions(str(bad))
    with pytest.raises(ValueError, match="default"):
        load_instructions("paper")

    experiments = {mode: ModelSpec.resolve(str(tiny_llama), instructions=load_instructions(mode)).experiment
                   for mode in ("default", "none", str(path))}
    assert experiments["default"] == "" and experiments["none"] == "instructions_none"
    assert experiments[str(path)].startswith("instructions_file-")


def test_cli_runs_reports_unknown_tasks_and_missing_data(tiny_llama, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert main(["--model", str(tiny_llama), "--tasks", "L2VMiniSTS", "--output", out, "--no-progress"]) == 0
    assert "L2VMiniSTS" in capsys.readouterr().out

    assert main(["--model", str(tiny_llama), "--tasks", "L2VMiniSTS,STS-12", "--output", out]) == 2
    err = capsys.readouterr().err
    assert "'STS-12'" in err and "STS12" in err

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    code = main(["--model", str(tiny_llama), "--tasks", "BIOSSES,L2VMiniSTS", "--output", out,
                 "--data-dir", str(data_dir), "--no-progress"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "BIOSSES" in printed and "missing-data" in printed
    assert str(data_dir / "mteb__biosses-sts" / "default") in printed
    table = load_results(out)
    assert table[table["task"] == "BIOSSES"]["status"].tolist() == ["missing-data"]
    assert table[table["task"] == "L2VMiniSTS"]["status"].eq("ok").all()


def test_probe_tasks_dispatch_resume_and_report(tiny_llama, tmp_path):
    out = tmp_path / "probes"
    summary = run_evaluation(config(tiny_llama, out, tasks="probe-chunk", probe_layers=(0, 2)))
    assert summary.exit_code == 0, summary.format()
    table = load_results(out)
    assert sorted(table["layer"].unique().tolist()) == [0, 2]
    assert (table["task"] == "probe-chunk").all() and table["is_main_score"].any()
    assert (table["model_revision"] == summary.model_revision).all() and (table["l2v_version"] != "").all()
    again = run_evaluation(config(tiny_llama, out, tasks="probe-chunk", probe_layers=(2,)))
    assert [o.status for o in again.outcomes] == ["skipped"]

    from l2v_eval.report import write_report

    md = write_report(out, tmp_path / "report").read_text()
    assert "## Probes per layer" in md and (tmp_path / "report" / "probe_chunk.png").is_file()

    # Probe data that is not there fails that task with a message naming the folder; the others still run.
    missing = tmp_path / "no-such-conll"
    broken = run_evaluation(config(tiny_llama, tmp_path / "noprobes", tasks="probe-ner,L2VMiniSTS",
                                   probe_data=missing))
    assert [o.status for o in broken.outcomes] == ["error", "ok"] and broken.exit_code == 1
    assert str(missing) in broken.outcomes[0].error


def test_probe_tasks_run_on_the_device_asked_for(tiny_llama, tmp_path, monkeypatch):
    """--device reaches the probes: on a machine that reports CUDA, device cpu keeps the word features and
    the linear probes on the CPU (left to choose, the probes would move the model to CUDA)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    evaluation = Evaluation(config(tiny_llama, tmp_path / "out", tasks="probe-chunk", probe_layers=(1,), device="cpu"))
    summary = evaluation.run()
    assert summary.exit_code == 0, summary.format()
    assert evaluation.encoder.model.device.type == "cpu"
