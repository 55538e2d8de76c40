"""Checkpoints are read as data only, survive a kill while saving, and a broken newest one falls back."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from l2v_core.training import CheckpointError, load_config, train
from l2v_core.training import checkpoints
from tests import tiny


class Killed(Exception):
    pass


class PlantedCode:
    """Unpickling this runs a shell command (what a tampered checkpoint file could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.txt"
    path.write_text("\n".join(tiny.CORPUS * 6))
    return path


def settings(model, corpus, out, **extra):
    return {**dict(base_model=str(model), train_file=str(corpus), output_dir=str(out), max_steps=4, batch_size=4,
                   max_length=64, learning_rate=5e-3, lora_dropout=0.1, save_steps=2, save_total_limit=3,
                   progress_bar=False), **extra}


def run(model, corpus, out, **extra):
    return train("mntp", load_config("mntp", None, settings(model, corpus, out, **extra)))


def adapter(out):
    return load_file(out / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tiny_llama, corpus, tmp_path_factory):
    """An uninterrupted 4-step run to compare resumed runs with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run(tiny_llama, corpus, out)
    return out


def two_checkpoints(tiny_llama, corpus, out):
    """A finished 4-step run (the same as ``straight``): step-000002 and step-000004 on disk."""
    run(tiny_llama, corpus, out, max_steps=4)
    return out / "checkpoints" / "step-000002", out / "checkpoints" / "step-000004"


@pytest.mark.parametrize("victim", ["optimizer.pt", "scheduler.pt", "rng_0.pt"])
def test_a_planted_pickle_is_refused_and_never_runs(tiny_llama, corpus, tmp_path, victim):
    out = tmp_path / "run"
    _, newest = two_checkpoints(tiny_llama, corpus, out)
    marker = tmp_path / "code-ran"
    torch.save({"state": PlantedCode(marker)}, newest / victim)
    with pytest.raises(CheckpointError) as caught:
        run(tiny_llama, corpus, out, max_steps=6)
    message = str(caught.value)
    assert not marker.exists()
    assert str(newest / victim) in message and "posix.system" in message and "\n" not in message
    assert newest.is_dir()  # refused, not set aside: nothing is resumed from a tampered run


def test_the_cli_refuses_a_planted_pickle_in_one_line(tiny_llama, corpus, tmp_path):
    out = tmp_path / "run"
    _, newest = two_checkpoints(tiny_llama, corpus, out)
    marker = tmp_path / "code-ran"
    with open(newest / "optimizer.pt", "wb") as f:  # a plain pickle, not even a torch archive
        import pickle

        pickle.dump(PlantedCode(marker), f)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    args = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in settings(tiny_llama, corpus, out, max_steps=6).items()]
    done = subprocess.run([sys.executable, "-m", "l2v_cli.train", "mntp", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and not marker.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"Refusing to load {newest / 'optimizer.pt'}" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("victim", ["optimizer.pt", "adapter/adapter_model.safetensors", "rng_0.pt"])
def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tiny_llama, corpus, tmp_path, straight,
                                                                   caplog, victim):
    out = tmp_path / "run"
    previous, newest = two_checkpoints(tiny_llama, corpus, out)
    data = (newest / victim).read_bytes()
    (newest / victim).write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING, logger="l2v_core.training.checkpoints"):
        result = run(tiny_llama, corpus, out, max_steps=4)
    assert result.resumed_from == 2
    warning = next(r.getMessage() for r in caplog.records if "cannot be resumed from" in r.getMessage())
    assert str(newest / victim) in warning and str(previous) in warning
    assert (out / "checkpoints" / "step-000004.unreadable" / victim).is_file()  # kept for inspection
    # Steps 3 and 4 were trained again from step 2's state: the result is the uninterrupted run's.
    assert_same_adapter(adapter(straight), adapter(out))


def test_a_truncated_only_checkpoint_is_refused_naming_it(tiny_llama, corpus, tmp_path):
    out = tmp_path / "run"
    run(tiny_llama, corpus, out, max_steps=2)
    only = out / "checkpoints" / "step-000002"
    (only / "scheduler.pt").write_bytes((only / "scheduler.pt").read_bytes()[:40])
    with pytest.raises(CheckpointError) as caught:
        run(tiny_llama, corpus, out, max_steps=4)
    message = str(caught.value)
    assert str(only / "scheduler.pt") in message and "no earlier complete checkpoint" in message
    assert str(out / "checkpoints") in message and "\n" not in message


def test_a_kill_while_saving_leaves_the_previous_checkpoint(tiny_llama, corpus, tmp_path, straight, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save

    def die_in_step_4s_save(obj, file, *args, **kwargs):
        if ".step-000004.tmp" in str(file) and str(file).endswith("optimizer.pt"):
            raise Killed
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", die_in_step_4s_save)
    with pytest.raises(Killed):
        run(tiny_llama, corpus, out)
    monkeypatch.undo()
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-000002"]
    assert [n for n, _ in checkpoints.list_checkpoints(str(out))] == [2]

    assert run(tiny_llama, corpus, out).resumed_from == 2
    assert_same_adapter(adapter(straight), adapter(out))
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())  # the half one is gone


def test_rng_states_are_plain_data(tmp_path):
    import random

    import numpy as np

    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1), np.random.standard_normal()  # cached Gaussians are part of the state too
    torch.save(checkpoints.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    checkpoints.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert expected[:4] == again[:4] and torch.equal(expected[4], again[4])


def plain_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_adapters_and_checkpoints_get_the_mode_of_a_plain_write(straight):
    # safetensors writes weights 0600 through a private temporary file; a saved run must stay
    # readable by whoever may read the user's other files.
    weights = [straight / "adapter" / "adapter_model.safetensors",
               *sorted((straight / "checkpoints").glob("step-*/adapter/adapter_model.safetensors"))]
    assert len(weights) >= 2
    for file in [*weights, *(straight / "adapter").iterdir()]:
        assert file.stat().st_mode & 0o777 == plain_mode(), file
