"""GradCache: chunked contrastive training with the gradients of the whole batch."""
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from l2v_core.training import ConfigError, load_config, sample_path, train
from l2v_core.training import gradcache, loop
from l2v_core.training.contrastive import SimCSETask, SupervisedTask
from l2v_core.training.gradcache import RandContext, cached_backward, chunked


def make_task(task_cls, stage, model, tmp_path, **extra):
    source = sample_path("supervised.json") if stage == "supervised" else None
    values = dict(base_model=str(model), output_dir=str(tmp_path / "unused"), max_length=64, temperature=0.5)
    if stage == "simcse":
        values["train_file"] = sample_path("fortunes.txt")
    config = load_config(stage, source, {**values, **extra})
    accelerator = loop.make_accelerator(config)
    torch.manual_seed(0)
    task = task_cls(config, accelerator)
    # LoRA starts with B = 0, which makes every lora_A gradient zero; random B makes all of them count.
    with torch.no_grad():
        for name, p in task.peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    task.encoder.train()
    return task, accelerator, task.batch(task.schedule.local_batch(0, 0, 1), 0)


def take_grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    assert grads and all(g.abs().max() > 0 for g in grads.values())
    return grads


def assert_grads_close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-7, msg=key)


def test_rand_context_replays_and_restores():
    torch.manual_seed(3)
    ctx = RandContext()
    first = torch.rand(4)
    after = torch.get_rng_state()
    with ctx:
        torch.testing.assert_close(torch.rand(4), first)  # the same draws again ...
    assert torch.equal(torch.get_rng_state(), after)  # ... and the outer stream goes on untouched


def test_cached_backward_matches_one_pass_on_a_plain_function():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, requires_grad=True)
    rows = torch.randn(11, 5)

    def loss_fn(reps):
        return torch.logsumexp(reps @ reps.T, dim=-1).mean()

    loss_fn(rows @ weight).backward()
    expected, weight.grad = weight.grad, None
    loss = cached_backward(lambda x: x @ weight, chunked(rows, 4), loss_fn)
    torch.testing.assert_close(weight.grad, expected)
    torch.testing.assert_close(loss, loss_fn(rows @ weight).detach())
    with pytest.raises(ValueError, match="chunk size must be > 0"):
        chunked(rows, 0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_simcse_gradients_with_dropout_equal_the_full_batch(tiny_llama, tmp_path, monkeypatch, checkpointing):
    # SimCSE defaults: attention and LoRA dropout 0.3. 7 texts -> 14 views in chunks of 4 (4+4+4+2).
    task, accelerator, batch = make_task(SimCSETask, "simcse", tiny_llama, tmp_path, batch_size=7,
                                         gradcache_chunk_size=4, gradient_checkpointing=checkpointing)
    assert task.config.attention_dropout == 0.3 and len(batch["texts"]) == 7
    assert task.peft_model.get_base_model().is_activation_checkpointing == checkpointing

    def full_batch(seed):
        # The whole batch in one autograd graph, drawing the same dropout masks as GradCache's
        # first pass (same seed, same chunks): what GradCache must reproduce.
        torch.manual_seed(seed)
        features = [task.encoder.tokenize(list(c)) for c in chunked(task.inputs(batch), 4)]
        loss = task.contrast(torch.cat([task.encoder(f) for f in features]), batch)
        loss.backward()
        return loss.detach(), take_grads(task.encoder)

    expected_loss, expected = full_batch(seed=1)
    torch.manual_seed(1)
    loss, tokens = task.backward(task.encoder, batch, accelerator)
    torch.testing.assert_close(loss, expected_loss)
    assert_grads_close(take_grads(task.encoder), expected)
    assert tokens == int(task.encoder.tokenize(task.inputs(batch))["attention_mask"].sum())

    # Dropout really matters here: other masks give other gradients, so without replaying
    # the RNG the second pass would not match its cached embeddings.
    _, other_masks = full_batch(seed=2)
    assert any(not torch.allclose(other_masks[k], expected[k], rtol=1e-2, atol=1e-6) for k in expected)
    monkeypatch.setattr(gradcache.RandContext, "__enter__", lambda self: self)
    monkeypatch.setattr(gradcache.RandContext, "__exit__", lambda self, *exc: None)
    torch.manual_seed(1)
    task.backward(task.encoder, batch, accelerator)
    unreplayed = take_grads(task.encoder)
    assert any(not torch.allclose(unreplayed[k], expected[k], rtol=1e-2, atol=1e-6) for k in expected)


def test_supervised_gradients_with_hard_negatives_equal_one_pass(tiny_llama, tmp_path):
    # 5 triples -> 15 texts (queries, positives, hard negatives) in chunks of 4 (4+4+4+3);
    # without dropout the reference is the plain one-pass loss of the loop.
    task, accelerator, batch = make_task(SupervisedTask, "supervised", tiny_llama, tmp_path, batch_size=5,
                                         gradcache_chunk_size=4, lora_dropout=0.0)
    assert len(batch["negatives"]) == 5 and isinstance(batch["queries"][0], list)  # instructions in play
    expected_loss, expected_tokens = task.loss(task.encoder, batch)
    expected_loss.backward()
    expected = take_grads(task.encoder)
    loss, tokens = task.backward(task.encoder, batch, accelerator)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-5, atol=1e-6)
    assert tokens == expected_tokens
    assert_grads_close(take_grads(task.encoder), expected)


def run_simcse(model, out, **extra):
    return train("simcse", load_config("simcse", None, {**dict(
        base_model=str(model), train_file=sample_path("fortunes.txt"), output_dir=str(out), max_steps=3, batch_size=6,
        max_length=24, learning_rate=2e-3, temperature=0.2, attention_dropout=0.0, lora_dropout=0.0,
        gradient_accumulation_steps=2, save_steps=0, merge_output=False, progress_bar=False), **extra}))


def test_training_with_gradcache_reaches_the_same_weights(tiny_llama, tmp_path):
    plain = run_simcse(tiny_llama, tmp_path / "plain")
    cached = run_simcse(tiny_llama, tmp_path / "cached", gradcache_chunk_size=5, gradient_checkpointing=True)
    m1, m2 = pd.read_csv(plain.metrics_file), pd.read_csv(cached.metrics_file)
    pd.testing.assert_series_equal(m1.loss, m2.loss, rtol=1e-4)
    assert (m1.tokens == m2.tokens).all()
    a = load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cached" / "adapter" / "adapter_model.safetensors")
    assert any(v.abs().max() > 1e-3 for k, v in a.items() if "lora_B" in k)  # training moved the weights
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_gradcache_with_bf16_autocast_trains(tiny_llama, tmp_path):
    result = run_simcse(tiny_llama, tmp_path / "bf16", max_steps=1, batch_size=4, gradcache_chunk_size=3, bf16=True)
    assert pd.read_csv(result.metrics_file).loss.notna().all() and result.final_loss > 0


def test_gradcache_and_global_batch_settings_are_checked():
    base = dict(base_model="m", train_file="t.txt", output_dir="o")
    with pytest.raises(ConfigError, match="`gradcache_chunk_size` must be > 0"):
        load_config("simcse", None, {**base, "gradcache_chunk_size": 0})
    with pytest.raises(ConfigError, match="Unknown key 'gradcache_chunk_size' for mntp"):
        load_config("mntp", None, {**base, "gradcache_chunk_size": 4})
    config = load_config("simcse", None, {**base, "global_batch_size": 12, "batch_size": 5})
    assert [config.process_batch_size(n) for n in (1, 2, 4)] == [12, 6, 3]  # batch_size is not used
    assert config.global_batch(4) == 12
    with pytest.raises(ConfigError, match="global_batch_size` 12 does not split evenly over 5 processes"):
        config.process_batch_size(5)
    assert load_config("simcse", None, {**base, "batch_size": 5}).global_batch(2) == 10


def fake_run(out, config, processes):
    """What a run on ``processes`` processes leaves behind: its settings and a checkpoint."""
    out.mkdir()
    loop._write_run_config(config, out, processes)
    checkpoint = out / "checkpoints" / "step-000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 2, "processes": processes}))
    return checkpoint


def test_resume_on_another_number_of_processes_keeps_the_global_batch(tmp_path):
    base = dict(base_model="m", train_file="t.txt", output_dir=str(tmp_path / "run"))
    checkpoint = fake_run(tmp_path / "run", load_config("simcse", None, {**base, "batch_size": 4}), processes=2)
    out = tmp_path / "run"
    # Same global batch of 8: per process on one process, or as global_batch_size.
    assert loop._check_resume(load_config("simcse", None, {**base, "batch_size": 8}), out, 1) == checkpoint
    assert loop._check_resume(load_config("simcse", None, {**base, "global_batch_size": 8}), out, 1) == checkpoint
    assert loop._check_resume(load_config("simcse", None, {**base, "batch_size": 2}), out, 4) == checkpoint
    with pytest.raises(ConfigError, match=r"global batch was 8 \(2 process\(es\)\), now it would be 4 .*"
                                          r"set global_batch_size 8 \(or batch_size 8 per process\)"):
        loop._check_resume(load_config("simcse", None, {**base, "batch_size": 4}), out, 1)
    # Other settings are still compared; the GradCache chunk size may change (memory, not maths).
    with pytest.raises(ConfigError, match="temperature: 0.05 -> 0.1"):
        loop._check_resume(load_config("simcse", None, {**base, "batch_size": 8, "temperature": 0.1}), out, 1)
    assert loop._check_resume(load_config("simcse", None, {**base, "batch_size": 8, "gradcache_chunk_size": 3}),
                              out, 1) == checkpoint


def test_resume_of_a_run_recorded_without_the_batch_layout(tmp_path):
    out = tmp_path / "run"
    config = load_config("simcse", None, dict(base_model="m", train_file="t.txt", output_dir=str(out), batch_size=4))
    checkpoint = fake_run(out, config, processes=1)
    record = json.loads((out / loop.RUN_CONFIG).read_text())
    del record["processes"], record["global_batch"], record["global_batch_size"], record["gradcache_chunk_size"]
    (out / loop.RUN_CONFIG).write_text(json.dumps(record))
    assert loop._check_resume(config, out, 1) == checkpoint
    with pytest.raises(ConfigError, match="batch_size: 4 -> 8"):
        loop._check_resume(load_config("simcse", None, {**config.to_dict(), "batch_size": 8}), out, 1)
    # A global batch of 8 from two processes cannot be resumed on three.
    fake_run(tmp_path / "other", config, processes=2)
    with pytest.raises(ConfigError, match="8 does not split over 3 processes"):
        loop._check_resume(config, tmp_path / "other", 3)
