"""The trainers' guarantees: resume after SIGKILL equals an unbroken run, no pickled code runs from a
checkpoint, GradCache equals one pass, evaluation leaves training untouched, pass-through arguments work."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from l2v_core.training import CheckpointError, ConfigError, DataError, load_config, sample_path, train
from tests import tiny

ROOT = Path(__file__).resolve().parents[1]


def settings(model, stage, corpus, out, **extra):
    data = sample_path("triples.jsonl") if stage == "supervised" else str(corpus)
    # Linear decay and dropout: the schedule and the random states must both come back on resume.
    return {"base_model": str(model), "train_file": data, "output_dir": str(out), "max_steps": 6, "batch_size": 4,
            "max_length": 24, "learning_rate": 5e-3, "lr_scheduler": "linear", "warmup_steps": 2, "lora_dropout": 0.1,
            "save_steps": 2, "save_total_limit": 1, "progress_bar": False, "dtype": "float32", "bf16": False,
            **extra}


def adapter(out):
    return load_file(Path(out) / "adapter" / "adapter_model.safetensors")


def run_in_subprocess(stage, values, kill_at=None):
    """Train in a fresh process; with ``kill_at`` the process SIGKILLs itself right after that step's update."""
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        from transformers import TrainerCallback
        from l2v_core.training import load_config, train
        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == {kill_at!r}:
                    os.kill(os.getpid(), signal.SIGKILL)
        values = json.loads(sys.argv[1])
        train({stage!r}, load_config({stage!r}, None, values), callbacks=[Kill()])
    """)
    # The same number of threads as this process: the resumed run is compared with one trained here to 1e-6, and
    # on some processors (AVX512 kernels) the reductions' order, so the last bits, follow the thread count.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", script, json.dumps(values)], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("stage", ["mntp", "simcse", "supervised"])
def test_a_sigkilled_run_resumes_to_the_weights_of_the_unbroken_run(stage, tiny_llama, toy_corpus, tmp_path):
    straight = tmp_path / "straight"
    train(stage, load_config(stage, None, settings(tiny_llama, stage, toy_corpus, straight)))
    resumed = tmp_path / "resumed"
    killed = run_in_subprocess(stage, settings(tiny_llama, stage, toy_corpus, resumed), kill_at=5)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (resumed / "adapter").exists()
    result = train(stage, load_config(stage, None, settings(tiny_llama, stage, toy_corpus, resumed)))
    assert result.resumed_from == 4
    a, b = adapter(straight), adapter(resumed)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the weights did move
    steps = pd.read_csv(resumed / "metrics.csv").step.tolist()
    assert steps == [1, 2, 3, 4, 5, 6]  # step 5, logged before the kill, is not there twice


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_planted_pickle_in_a_checkpoint_is_not_run(tiny_llama, toy_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    values = settings(tiny_llama, "mntp", toy_corpus, out, max_steps=2)
    train("mntp", load_config("mntp", None, values))
    monkeypatch.chdir(tmp_path)
    victims = [p for p in (out / "checkpoint-2").iterdir() if p.suffix in (".pt", ".pth")]
    assert {p.name for p in victims} >= {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    for victim in victims:
        victim.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="checkpoint-2"):
        train("mntp", load_config("mntp", None, {**values, "max_steps": 2}))
    assert not (tmp_path / "PWNED").exists()


def test_cached_loss_gives_the_gradients_of_one_pass_with_dropout(tiny_llama, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss

    from l2v_core.st_modules import LLM2VecModule
    from l2v_core.training.contrastive import load_encoder

    config = load_config("simcse", None, settings(tiny_llama, "simcse", "x", tmp_path, lora_dropout=0.3,
                                                  attention_dropout=0.3))
    encoder = load_encoder(config)
    model = SentenceTransformer(modules=[LLM2VecModule(encoder)])
    model.train()
    texts = tiny.CORPUS[:8]
    columns = [model.preprocess(texts), model.preprocess(texts)]
    params = [p for p in model.parameters() if p.requires_grad]

    def grads():
        out = [p.grad.clone() for p in params]
        model.zero_grad()
        return out

    # One pass: every chunk embedded with gradients, in the order (and so with the dropout) of the cached loss.
    torch.manual_seed(0)
    reps = []
    for features in columns:
        chunks = [{k: v[i:i + 3] for k, v in features.items()} for i in range(0, len(texts), 3)]
        reps.append(torch.cat([model(chunk)["sentence_embedding"] for chunk in chunks]))
    MultipleNegativesRankingLoss(model, scale=20.0).compute_loss_from_embeddings(reps, None).backward()
    full = grads()
    torch.manual_seed(0)
    CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=3)(columns, None).backward()
    cached = grads()
    assert max((a - b).abs().max().item() for a, b in zip(full, cached)) <= 1e-5
    assert max(a.abs().max().item() for a in full) > 1e-4
    torch.manual_seed(1)  # other dropout masks give other gradients: the test can tell
    CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=3)(columns, None).backward()
    assert max((a - b).abs().max().item() for a, b in zip(full, grads())) > 1e-5


def test_a_prompted_query_pools_like_encode_with_an_instruction(tiny_llama):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.data_collator import SentenceTransformerDataCollator

    from l2v_core import LLM2Vec
    from l2v_core.st_modules import LLM2VecModule

    encoder = LLM2Vec.from_pretrained(str(tiny_llama), pooling_mode="mean", max_length=32, dtype="float32")
    model = SentenceTransformer(modules=[LLM2VecModule(encoder)]).eval()
    instruction = "Given a question, retrieve the passage that answers it:"
    collate = SentenceTransformerDataCollator(model.preprocess, prompts={"quotes": {"query": instruction}})
    batch = collate([{"dataset_name": "quotes", "query": t, "positive": t} for t in tiny.CORPUS[:3]])
    features = {k[len("query_"):]: v for k, v in batch.items() if k.startswith("query_")}
    with torch.no_grad():
        trained = model(features)["sentence_embedding"]
    expected = encoder.encode([[instruction, t] for t in tiny.CORPUS[:3]], convert_to_tensor=True)
    plain = encoder.encode(tiny.CORPUS[:3], convert_to_tensor=True)
    torch.testing.assert_close(trained.float(), expected.float(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(trained.float(), plain.float(), atol=1e-3)


def test_evaluation_scores_go_to_metrics_and_leave_training_untouched(tiny_llama, toy_corpus, tmp_path):
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    evaluator = EmbeddingSimilarityEvaluator(tiny.CORPUS[:6], tiny.CORPUS[1:7], [0.1, 0.9, 0.3, 0.5, 0.2, 0.8],
                                             name="toy")
    plain = tmp_path / "plain"
    train("simcse", load_config("simcse", None, settings(tiny_llama, "simcse", toy_corpus, plain, max_steps=4)))
    evaluated = tmp_path / "evaluated"
    values = settings(tiny_llama, "simcse", toy_corpus, evaluated, max_steps=4, eval_tasks="toy", eval_steps=2)
    result = train("simcse", load_config("simcse", None, values), evaluator=evaluator)
    metrics = pd.read_csv(evaluated / "metrics.csv")
    column = "eval_toy_spearman_cosine"
    assert metrics.dropna(subset=[column]).step.tolist() == [2, 4]
    assert result.eval_scores[column] == pytest.approx(metrics[column].iloc[-1], abs=1e-5)
    a, b = adapter(plain), adapter(evaluated)
    assert all(torch.equal(a[k], b[k]) for k in a)
    card = (evaluated / "adapter" / "README.md").read_text()
    assert "MultipleNegativesRankingLoss" in card


def test_mntp_evaluation_scores_the_encoder_being_trained(tiny_llama, toy_corpus, tmp_path):
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    evaluator = EmbeddingSimilarityEvaluator(tiny.CORPUS[:6], tiny.CORPUS[1:7], [0.1, 0.9, 0.3, 0.5, 0.2, 0.8],
                                             name="toy")
    out = tmp_path / "mntp"
    values = settings(tiny_llama, "mntp", toy_corpus, out, max_steps=2, eval_tasks="toy")
    result = train("mntp", load_config("mntp", None, values), evaluator=evaluator)
    from l2v_core import LLM2Vec
    from l2v_core.st_modules import LLM2VecModule
    from sentence_transformers import SentenceTransformer

    saved = SentenceTransformer(modules=[LLM2VecModule(LLM2Vec.from_pretrained(result.adapter_dir, dtype="float32"))])
    again = evaluator(saved)
    assert result.eval_scores["eval_toy_spearman_cosine"] == pytest.approx(again["toy_spearman_cosine"], abs=1e-4)


def test_contrastive_evaluation_and_the_saved_encoder_use_the_encoder_s_own_length(tiny_llama, toy_corpus, tmp_path):
    """Training cuts texts at max_length; evaluation during training and the saved encoder read the encoder's
    own length (512 here), so the scores logged are those l2v-eval gives the saved adapter."""
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from transformers import TrainerCallback

    class Recording(EmbeddingSimilarityEvaluator):
        lengths: list = []

        def __call__(self, model, *args, **kwargs):
            self.lengths.append(model[0].encoder.max_length)
            return super().__call__(model, *args, **kwargs)

    class TrainingLength(TrainerCallback):
        lengths: list = []

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.lengths.append(model[0].encoder.max_length)

    evaluator = Recording(tiny.CORPUS[:6], tiny.CORPUS[1:7], [0.1, 0.9, 0.3, 0.5, 0.2, 0.8], name="toy")
    out = tmp_path / "run"
    values = settings(tiny_llama, "simcse", toy_corpus, out, max_steps=2, eval_tasks="toy", eval_steps=2)
    result = train("simcse", load_config("simcse", None, values), evaluator=evaluator, callbacks=[TrainingLength()])
    assert set(TrainingLength.lengths) == {24} and Recording.lengths == [512]
    saved = json.loads((Path(result.adapter_dir) / "llm2vec_config.json").read_text())
    assert saved["max_length"] == 512


def test_tensorboard_gets_the_loss(tiny_llama, toy_corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, out, max_steps=2,
                                                     report_to="tensorboard")))
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert len(accumulator.Scalars("train/loss")) == 2


def test_bf16_autocast_on_cpu_lowers_the_loss(tiny_llama, toy_corpus, tmp_path):
    out = tmp_path / "bf16"
    result = train("mntp", load_config("mntp", None, settings(
        tiny_llama, "mntp", toy_corpus, out, max_steps=8, bf16=True, lora_dropout=0.0, lr_scheduler="constant",
        warmup_steps=0, learning_rate=2e-2, line_by_line=True, batch_size=72)))  # one batch: the same toy batch
    losses = pd.read_csv(out / "metrics.csv").loss
    assert result.final_loss < losses.iloc[0]
    assert load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, out, bf16="auto")).bf16 == "auto"
    with pytest.raises(ConfigError, match="`bf16`"):
        load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, out, bf16="yes"))


def test_extending_max_steps_is_refused_with_a_decaying_schedule_and_exact_with_a_constant_one(tiny_llama, toy_corpus,
                                                                                                 tmp_path):
    out = tmp_path / "linear"
    train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, out, max_steps=2)))
    with pytest.raises(ConfigError, match="max_steps 4.*max_steps 2.*new output_dir"):
        train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, out, max_steps=4)))
    constant = dict(lr_scheduler="constant_with_warmup", warmup_steps=1)
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, straight, max_steps=4, **constant)))
    train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, extended, max_steps=2, **constant)))
    train("mntp", load_config("mntp", None, settings(tiny_llama, "mntp", toy_corpus, extended, max_steps=4, **constant)))
    a, b = adapter(straight), adapter(extended)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_a_damaged_metrics_file_is_repaired_on_resume(tiny_llama, toy_corpus, tmp_path, caplog):
    out = tmp_path / "run"
    values = settings(tiny_llama, "mntp", toy_corpus, out, max_steps=4, lr_scheduler="constant")
    train("mntp", load_config("mntp", None, {**values, "max_steps": 2}))
    with open(out / "metrics.csv", "a") as f:
        f.write("garbage line, not a row\n1,2.5,0.001,,0.1\n3,4.")  # garbage, a repeated step, a cut-off row
    train("mntp", load_config("mntp", None, values))
    assert pd.read_csv(out / "metrics.csv").step.tolist() == [1, 2, 3, 4]
    assert "dropped 3 damaged or repeated row(s)" in caplog.text


def test_loss_and_trainer_arguments_by_name(tiny_llama, toy_corpus, tmp_path):
    base = settings(tiny_llama, "simcse", toy_corpus, tmp_path / "x")
    with pytest.raises(ConfigError, match="did you mean 'MatryoshkaLoss'"):
        train("simcse", load_config("simcse", None, {**base, "loss": "MatryoskaLoss"}))
    with pytest.raises(ConfigError, match="did you mean 'report_to'"):
        load_config("simcse", None, {**base, "report_too": "tensorboard"})
    with pytest.raises(ConfigError, match="^`logging_steps` must be"):
        load_config("simcse", None, {**base, "logging_steps": "often"})
    with pytest.raises(ConfigError, match="did you mean 'lr_scheduler'"):
        load_config("simcse", None, {**base, "lr_schedulr": "linear"})
    out = tmp_path / "matryoshka"
    result = train("simcse", load_config("simcse", None, {**base, "output_dir": str(out), "max_steps": 2,
                                                          "loss": "MatryoshkaLoss",
                                                          "loss_args": {"matryoshka_dims": [32, 16]}}))
    assert "MatryoshkaLoss" in (out / "adapter" / "README.md").read_text()
    assert result.final_loss is not None


def test_a_lone_surrogate_in_a_row_is_refused_naming_file_and_line(tmp_path):
    from l2v_core.training import load_texts, load_triples

    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n')
    with pytest.raises(DataError, match=r"t.jsonl, line 2: 'text' holds a lone surrogate"):
        load_texts(str(texts), cache_dir=str(tmp_path / "c"))
    triples = tmp_path / "q.jsonl"
    triples.write_text('{"query": "q", "positive": "p\\udc00", "negative": "n"}\n')
    with pytest.raises(DataError, match=r"q.jsonl, line 1: 'positive'"):
        load_triples(str(triples), cache_dir=str(tmp_path / "c"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_device_s_bf16_units(native, monkeypatch, tmp_path):
    from l2v_core.training import arguments, modeling

    monkeypatch.setattr(arguments, "bf16_pays", lambda device: native)
    monkeypatch.setattr("l2v_core.dtypes.bf16_pays", lambda device: native)
    config = load_config("mntp", None, {"base_model": "m", "train_file": "t.txt", "output_dir": str(tmp_path)})
    assert config.dtype == "auto" and config.bf16 == "auto"  # the defaults
    assert arguments.training_arguments(config, "mntp", 1).bf16 is native
    assert modeling.model_kwargs(config)["dtype"] == (torch.bfloat16 if native else torch.float32)
