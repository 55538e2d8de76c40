"""A run killed mid-way and restarted ends with the weights of the uninterrupted run."""
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from l2v_core.training import ConfigError, load_config, train
from l2v_core.training import loop
from tests import tiny


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.txt"
    path.write_text("\n".join(tiny.CORPUS * 6))
    return path


def settings(model, corpus, out, **extra):
    # Linear decay and dropout: the schedule and the RNG states must both come back.
    return {**dict(base_model=str(model), train_file=str(corpus), output_dir=str(out), max_steps=6, batch_size=4,
                   max_length=24, learning_rate=5e-3, lr_scheduler="linear", warmup_steps=2, lora_dropout=0.1,
                   save_steps=2, save_total_limit=1, progress_bar=False), **extra}


def adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


def test_resume_matches_the_uninterrupted_run(tiny_llama, corpus, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, straight)))

    resumed = tmp_path / "resumed"
    add = loop.MetricsLog.add

    def die_at_step_5(self, step, *args):
        add(self, step, *args)
        if step == 5:  # after step 5's update, before its checkpoint: step 5 must be redone
            raise Killed

    monkeypatch.setattr(loop.MetricsLog, "add", die_at_step_5)
    with pytest.raises(Killed):
        train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, resumed)))
    monkeypatch.undo()
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step-000004"]
    assert not (resumed / "adapter").exists()

    result = train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, resumed)))
    assert result.resumed_from == 4

    a, b = adapter(straight), adapter(resumed)
    assert a.keys() == b.keys()
    for key in a:  # bit-identical: optimizer, schedule, data order, masks and dropout all came back
        assert torch.equal(a[key], b[key]), key
    # The weights did move (the comparison is not between two untouched adapters).
    assert any(v.abs().max() > 1e-3 for k, v in a.items() if "lora_B" in k)

    m_straight, m_resumed = pd.read_csv(straight / "metrics.csv"), pd.read_csv(resumed / "metrics.csv")
    assert m_resumed.step.tolist() == [1, 2, 3, 4, 5, 6]  # step 5 logged once, not twice
    pd.testing.assert_series_equal(m_straight.loss, m_resumed.loss, rtol=0, atol=0)
    pd.testing.assert_series_equal(m_straight.lr, m_resumed.lr)


def test_resume_refuses_changed_settings(tiny_llama, corpus, tmp_path):
    out = tmp_path / "run"
    train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, out, max_steps=2)))
    with pytest.raises(ConfigError, match=r"settings changed since it started \(learning_rate: 0.005 -> 0.001\)"):
        train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, out, learning_rate=1e-3)))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, out, resume=False)))
    # More steps is allowed: the run goes on from its last checkpoint.
    result = train("mntp", load_config("mntp", None, settings(tiny_llama, corpus, out, max_steps=3)))
    assert result.resumed_from == 2 and pd.read_csv(out / "metrics.csv").step.tolist() == [1, 2, 3]
