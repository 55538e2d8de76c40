"""Settings that must be finite, an output_dir that cannot be a folder, and `l2v-train STAGE --help`."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from l2v_cli import train as cli
from l2v_core.training import STAGES, ConfigError, load_config
from l2v_core.training.config import setting_help

FLOAT_KEYS = {stage: [f.name for f in dataclasses.fields(cls) if f.type in ("float", float)]
              for stage, cls in STAGES.items()}


@pytest.mark.parametrize("stage, key", [(s, k) for s, keys in FLOAT_KEYS.items() for k in keys])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_every_float_setting_must_be_finite(stage, key, value, required):
    with pytest.raises(ConfigError, match=rf"^`{key}` must be a finite number, got {value}$"):
        load_config(stage, None, {**required, key: value})


def test_the_float_keys_are_found():
    assert {"learning_rate", "weight_decay", "max_grad_norm", "lora_dropout"} <= set(FLOAT_KEYS["mntp"])
    assert {"temperature", "attention_dropout"} <= set(FLOAT_KEYS["simcse"])


def test_non_finite_values_from_a_config_file_and_the_command_line(tmp_path, capsys, required):
    config = tmp_path / "c.json"
    config.write_text('{"base_model": "m", "train_file": "t.txt", "output_dir": "o", "learning_rate": NaN}')
    with pytest.raises(ConfigError, match="`learning_rate` must be a finite number, got nan"):
        load_config("mntp", config)
    assert cli.main(["simcse", *[f"--{k}={v}" for k, v in required.items()], "--temperature", "Infinity"]) == 2
    assert capsys.readouterr().err == "error: `temperature` must be a finite number, got inf\n"


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys, required):
    existing = tmp_path / "notes.txt"
    existing.write_text("not a folder")
    with pytest.raises(ConfigError, match=rf"^`output_dir` '{existing}' is an existing file; give a folder path$"):
        load_config("mntp", None, {**required, "output_dir": str(existing)})
    below = existing / "run"
    assert cli.main(["mntp", "--base_model", "m", "--train_file", "t.txt", "--output_dir", str(below)]) == 2
    assert capsys.readouterr().err == (f"error: `output_dir` '{below}' lies under '{existing}', an existing file; "
                                       "give a folder path\n")
    load_config("mntp", None, {**required, "output_dir": str(tmp_path / "new" / "run")})  # to be created: fine


def squeeze(text: str) -> str:
    """Text without whitespace: argparse wraps help lines anywhere, hyphens included."""
    return "".join(text.split())


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_help_lists_every_key_with_its_default_and_meaning(stage, capsys, required):
    with pytest.raises(SystemExit) as done:
        cli.main([stage, "--help"])
    assert done.value.code == 0
    text = squeeze(capsys.readouterr().out)
    config = STAGES[stage](**required)
    for declared in dataclasses.fields(STAGES[stage]):
        meaning = squeeze(setting_help(STAGES[stage], declared.name))
        assert meaning, f"{stage}: key {declared.name} has no help"
        assert f"--{declared.name}VALUE{meaning}" in text, declared.name
        if declared.name not in required:
            value = getattr(config, declared.name)
            shown = (",".join(value) if isinstance(value, list) else value if isinstance(value, str) and value
                     else json.dumps(value))
            assert squeeze(f"{meaning} (default: {shown})") in text, declared.name


def test_stage_defaults_in_help_are_the_stage_s_own(capsys):
    with pytest.raises(SystemExit):
        cli.main(["simcse", "-h"])
    text = squeeze(capsys.readouterr().out)
    assert "(default:128)" in text and "(default:3e-05)" in text  # SimCSE's batch size and learning rate


def test_help_runs_as_the_installed_command():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "l2v_cli.train", "supervised", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0 and "--homogeneous_batches VALUE" in done.stdout and "--eval_tasks VALUE" in done.stdout
