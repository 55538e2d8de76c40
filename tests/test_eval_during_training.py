"""MtebEvaluator: mteb scores of the encoder being trained, as a sentence-transformers evaluator."""
import logging
import math
import os
import random
import socket
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sentence_transformers import SentenceTransformer

from l2v_core import LLM2Vec
from l2v_core.st_modules import LLM2VecModule
from l2v_eval.harness import EvalConfig, run_evaluation
from l2v_eval.live import evaluate_encoder, load_eval_tasks
from l2v_eval.tasks.mini import MINI_TASK_NAMES
from l2v_eval.training_eval import EvalTasksError, MtebEvaluator

SHORT = 40  # a training length: the instructions fit, many l2v-mini texts do not


def seeded(score, *args):
    """Scores compared across calls start from one global random state, so no match hinges on what ran before."""
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    return score(*args)


def st_model(encoder: LLM2Vec) -> SentenceTransformer:
    return SentenceTransformer(modules=[LLM2VecModule(encoder)], device="cpu")


@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return LLM2Vec.from_pretrained(str(tiny_llama))


@pytest.fixture(scope="module")
def mini(encoder):
    """The evaluator and what it returned for the tiny model on l2v-mini."""
    evaluator = MtebEvaluator("l2v-mini", name="")
    return evaluator, seeded(evaluator, st_model(encoder))


def test_scores_equal_l2v_eval_and_live_encoder_for_the_same_weights(mini, encoder, tiny_llama, tmp_path):
    evaluator, scores = mini
    assert list(scores) == [*MINI_TASK_NAMES, "mean"] and evaluator.primary_metric == "mean"
    assert scores["mean"] == pytest.approx(sum(scores[n] for n in MINI_TASK_NAMES) / len(MINI_TASK_NAMES))
    assert scores == {**seeded(evaluate_encoder, encoder, load_eval_tasks("l2v-mini")), "mean": scores["mean"]}

    summary = run_evaluation(EvalConfig(model=str(tiny_llama), tasks="l2v-mini", output=tmp_path,
                                        show_progress=False, batch_size=16))
    assert summary.exit_code == 0, summary.format()
    table = pd.read_parquet(tmp_path / "scores.parquet")
    mains = table[table["is_main_score"]].set_index("task")["value"]
    for name in MINI_TASK_NAMES:  # other batch size, so padding differs: float noise only
        assert scores[name] == pytest.approx(mains[name], rel=1e-5, abs=1e-6), name


def test_random_states_and_train_modes_are_put_back(mini, encoder):
    evaluator, scores = mini
    model = st_model(encoder)
    model.train()
    encoder.model.layers[0].eval()  # a submodule a trainer keeps in eval mode stays so
    modes = [m.training for m in model.modules()]
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    assert evaluator(model) == scores  # the tasks' own draws are reset on every call
    assert [m.training for m in model.modules()] == modes
    assert random.getstate() == before[0]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), before[1]))
    assert torch.equal(torch.get_rng_state(), before[2])
    encoder.model.train()

    # The guard is needed: mteb's scoring alone moves the generators and leaves the model in eval mode.
    evaluate_encoder(encoder, evaluator.tasks[:2])
    moved = (random.getstate() != before[0] or not np.array_equal(np.random.get_state()[1], before[1][1])
             or not torch.equal(torch.get_rng_state(), before[2]))
    assert moved and not encoder.model.training


def test_scored_at_the_encoder_s_own_length_not_the_training_length(tiny_llama, mini, monkeypatch):
    """A pipeline that lowered LLM2Vec.max_length for training passes the saved length: texts longer than
    the training length are encoded whole, the scores are those of the untouched encoder, and the training
    length is back afterwards."""
    _, own_scores = mini  # the same weights at the encoder's own 512 tokens
    trained = LLM2Vec.from_pretrained(str(tiny_llama))
    assert trained.max_length == 512  # what llm2vec_config.json / the defaults give, and what save() writes
    trained.max_length = SHORT
    planned = []
    real_plan = trained.plan
    monkeypatch.setattr(trained, "plan", lambda *a, **k: planned.append(real_plan(*a, **k)) or planned[-1])

    scores = seeded(MtebEvaluator("l2v-mini", name="", max_length=512), st_model(trained))
    assert trained.max_length == SHORT
    assert max(max(plan.lengths) for plan in planned) > SHORT
    assert scores == pytest.approx(own_scores, rel=1e-6, abs=1e-7)

    planned.clear()
    at_training_length = seeded(MtebEvaluator("l2v-mini", name=""), st_model(trained))  # None: the encoder's max_length
    assert max(max(plan.lengths) for plan in planned) <= SHORT
    assert at_training_length != pytest.approx(own_scores, rel=1e-3)


def test_warnings_of_the_scoring_become_one_log_line(tiny_llama, caplog):
    trained = LLM2Vec.from_pretrained(str(tiny_llama))
    trained.max_length = SHORT  # LLM2Vec warns on every encode call that truncates
    with warnings.catch_warnings(record=True) as escaped, caplog.at_level(logging.INFO, "l2v_eval.training_eval"):
        warnings.simplefilter("always")
        MtebEvaluator("L2VMiniRetrieval,L2VMiniClassification", name="").score_encoder(trained)
    assert [str(w.message) for w in escaped] == []
    lines = [r.getMessage() for r in caplog.records if "during the evaluation" in r.getMessage()]
    assert len(lines) == 1 and "UserWarning x" in lines[0] and "truncated" in lines[0]


def test_score_encoder_on_a_plain_llm2vec(encoder, mini):
    """MNTP's case: the backbone in an LLM2Vec built in memory, mean pooling, in train mode."""
    evaluator, scores = mini
    plain = LLM2Vec(encoder.model, encoder.tokenizer, pooling_mode="mean")
    plain.train()
    assert seeded(evaluator.score_encoder, plain) == scores
    assert plain.training and plain.model.training
    plain.eval()


def test_name_prefixes_keys_as_sentence_transformers_evaluators_do(encoder):
    evaluator = MtebEvaluator(["L2VMiniSTS"])  # default name "mteb"
    model = st_model(encoder)
    scores = evaluator(model, epoch=1, steps=7)
    assert list(scores) == ["mteb_L2VMiniSTS", "mteb_mean"] and evaluator.primary_metric == "mteb_mean"
    assert scores["mteb_mean"] == scores["mteb_L2VMiniSTS"]
    assert model.model_card_data.eval_results_dict[evaluator] == scores
    assert model.model_card_data.training_logs[-1] == {"Epoch": 1, "Step": 7, "mteb_mean": scores["mteb_mean"]}


def test_bad_tasks_fail_at_construction_in_one_line(tmp_path):
    with pytest.raises(EvalTasksError, match=r"'l2v-mni'.*did you mean l2v-mini") as err:
        MtebEvaluator("l2v-mni")
    assert "\n" not in str(err.value)
    with pytest.raises(EvalTasksError, match="probe-ner: word-level probes are not evaluated during training"):
        MtebEvaluator("L2VMiniSTS,probe-ner")
    with pytest.raises(EvalTasksError, match=r"'BIOSSES': Task BIOSSES: dataset 'mteb/biosses-sts'") as err:
        MtebEvaluator("BIOSSES", data_dir=str(tmp_path))  # a real mteb task whose data is not here
    assert str(tmp_path / "mteb__biosses-sts" / "default") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="max_length must be a positive integer or None"):
        MtebEvaluator("L2VMiniSTS", max_length=0)


def test_a_model_without_an_l2v_module_is_refused():
    from sentence_transformers.sentence_transformer.modules import Normalize

    with pytest.raises(TypeError, match="first module must be l2v_core.st_modules.LLM2VecModule, got Normalize"):
        MtebEvaluator("L2VMiniSTS")(SentenceTransformer(modules=[Normalize()], device="cpu"))


def _rank_worker(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        evaluator = MtebEvaluator("L2VMiniSTS,L2VMiniRetrieval", name="")
        # a spawned process: fp32 as the test's own encoder, whatever this processor has
        scores = evaluator(st_model(LLM2Vec.from_pretrained(model_dir, dtype="float32")))
        dist.barrier()  # the trainer's next collective: rank 1 waits here while rank 0 scores
        torch.save(scores, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_only_rank_zero_scores_under_torch_distributed(tiny_llama, encoder, tmp_path):
    """Rank 0 scores alone (its encoding is not sharded over ranks that are not encoding), rank 1 returns {}."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_worker, args=(port, str(tiny_llama), str(tmp_path)), nprocs=2, start_method="spawn")
    assert torch.load(tmp_path / "rank1.pt") == {}
    scores = torch.load(tmp_path / "rank0.pt")
    alone = evaluate_encoder(encoder, load_eval_tasks("L2VMiniSTS,L2VMiniRetrieval"))
    assert scores == {**alone, "mean": pytest.approx(sum(alone.values()) / 2)}
    assert not math.isnan(scores["mean"])
