"""What l2v-eval records about a model next to its scores: mteb ModelMeta fields filled (parameters,
embedding dimension, token limit, weight memory, revision, base model, adapters), the exact instruction
strings per task, and a results folder mteb itself reads back."""
from __future__ import annotations

import json

import mteb
import pytest

from l2v_core import LLM2Vec
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.model import ModelSpec
from l2v_eval.results import INSTRUCTIONS_NAME, load_results
from l2v_eval.tasks.instructions import load_instructions, task_roles
from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS
from l2v_eval.tasks.mteb_registry import suite_benchmark
from tests.hubcache import lora_adapter

TASKS = "L2VMiniSTS,L2VMiniRetrieval"


@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory):
    return lora_adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "tiny-lora", 3, str(tiny_llama))


@pytest.fixture(scope="module")
def run(tiny_llama, adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("meta-run")
    summary = run_evaluation(EvalConfig(model=str(tiny_llama), peft=(str(adapter),), tasks=TASKS, output=out,
                                        show_progress=False))
    assert summary.exit_code == 0, summary.format()
    (folder,) = [p.parent for p in (out / "mteb").rglob("model_meta.json")]
    return out, summary, folder


def test_model_meta_is_filled_from_the_model(run, tiny_llama, adapter):
    out, summary, folder = run
    meta = json.loads((folder / "model_meta.json").read_text())
    encoder = LLM2Vec.from_pretrained(str(tiny_llama), peft_model_name_or_path=str(adapter))
    params = list(encoder.model.parameters())
    assert meta["n_parameters"] == sum(p.numel() for p in params)
    assert meta["memory_usage_mb"] == round(sum(p.numel() * p.element_size() for p in params) / 2 ** 20, 1)
    assert meta["embed_dim"] == encoder.hidden_size and meta["max_tokens"] == encoder.max_length
    assert meta["revision"] == summary.model_revision
    assert meta["adapted_from"] == str(tiny_llama)
    assert meta["loader_kwargs"] == {"base_model_name_or_path": str(tiny_llama),
                                     "peft_model_name_or_path": [str(adapter)]}


def test_model_meta_before_loading_reads_only_files(tiny_llama):
    spec = ModelSpec.resolve(str(tiny_llama))
    meta = spec.model_meta()  # nothing loaded: config.json and the safetensors headers
    encoder = LLM2Vec.from_pretrained(str(tiny_llama))
    params = list(encoder.model.parameters())
    assert meta.n_parameters == sum(p.numel() for p in params)  # the LM head of the checkpoint left out
    assert meta.memory_usage_mb == round(sum(p.numel() * p.element_size() for p in params) / 2 ** 20, 1)
    assert meta.embed_dim == encoder.hidden_size


def test_instruction_strings_are_recorded_per_task(run):
    out, _, folder = run
    lines = [json.loads(line) for line in (folder / INSTRUCTIONS_NAME).read_text().splitlines()]
    recorded = {entry["task"]: entry["instructions"] for entry in lines}
    instructions = load_instructions("default")
    for task in (L2VMiniSTS(), L2VMiniRetrieval()):
        expected = {role: instructions.for_task(task.metadata, kind) for role, kind in task_roles(task).items()}
        assert recorded[task.metadata.name] == expected
    assert recorded["L2VMiniRetrieval"]["query"] and recorded["L2VMiniRetrieval"]["document"] == ""


def test_mteb_reads_the_results_folder_back(run):
    out, _, _ = run
    results = mteb.ResultCache(out / "mteb").load_results(tasks=suite_benchmark("l2v-mini"))
    frame = results.to_dataframe()
    table = load_results(out / "scores.parquet")
    ours = table[table["is_main_score"].astype(bool)].set_index("task")["value"]
    model_column = [c for c in frame.columns if c not in ("task_name", "is_public")][0]
    theirs = frame.set_index("task_name")[model_column]
    assert set(theirs.index) == set(TASKS.split(","))
    for name in theirs.index:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-6)


def test_leaderboard_shows_the_model_facts(run, capsys):
    from l2v_cli.eval import main

    out, _, folder = run
    meta = json.loads((folder / "model_meta.json").read_text())
    assert main(["leaderboard", str(out), "--model-meta", "-o", str(out / "board.csv")]) == 0
    printed = capsys.readouterr().out
    header, row = printed.splitlines()[1:3]
    assert header.split()[:4] == ["n_parameters", "embed_dim", "max_tokens", "memory_mb"]
    assert row.split()[1:4] == [str(meta["n_parameters"]), str(meta["embed_dim"]), str(meta["max_tokens"])]
    import pandas as pd

    board = pd.read_csv(out / "board.csv")
    assert board.loc[0, "n_parameters"] == meta["n_parameters"] and board.loc[0, "base_model"] == meta["adapted_from"]
