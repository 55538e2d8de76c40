"""l2v-train end to end on the shipped sample data and configs, with a tiny model."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from l2v_core import LLM2Vec
from l2v_cli import train as cli
from l2v_core.training import sample_path

FEW = ["--batch_size", "4", "--max_length", "64", "--save_steps", "2", "--progress_bar", "false"]
TEXTS = ["Where there is a will, there is a way.", "The early bird catches the worm."]


def test_mntp_then_simcse_then_supervised(tiny_llama, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["--base_model", str(tiny_llama)]
    assert cli.main(["mntp", sample_path("mntp.json"), *base, "--output_dir", str(runs / "mntp"),
                     "--max_steps", "3", "--merge", *FEW]) == 0
    printed = capsys.readouterr().out
    assert "mntp: 3 steps" in printed and f"merged model: {runs / 'mntp'}" in printed
    assert (runs / "mntp" / "adapter" / "adapter_config.json").is_file()

    assert cli.main(["simcse", sample_path("simcse.json"), *base, "--mntp_adapter", str(runs / "mntp" / "adapter"),
                     "--output_dir", str(runs / "simcse"), "--max_steps", "3", *FEW]) == 0
    assert cli.main(["supervised", sample_path("supervised.json"), *base, "--mntp_adapter",
                     str(runs / "mntp" / "adapter"), "--output_dir", str(runs / "supervised"), "--max_steps", "3",
                     *FEW]) == 0
    for stage in ("mntp", "simcse", "supervised"):
        metrics = pd.read_csv(runs / stage / "metrics.csv")
        assert metrics.step.tolist() == [1, 2, 3] and metrics.loss.notna().all()

    # The result loads as an encoder, and after l2v-convert with sentence-transformers.
    from sentence_transformers import SentenceTransformer

    from l2v_cli import convert

    encoder = LLM2Vec.from_pretrained(str(runs / "simcse"))
    vectors = encoder.encode(TEXTS, show_progress_bar=False)
    assert convert.main([str(runs / "simcse"), str(tmp_path / "st")]) == 0
    st = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True).cpu(), vectors, rtol=1e-4, atol=1e-4)


def test_cli_errors_are_one_clear_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "l2v_cli.train", "mntp", sample_path("mntp.json"), "--output_dir", str(tmp_path),
         "--max_step", "3"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert "error: Unknown key 'max_step' for mntp training; did you mean 'max_steps'" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_missing_data(tiny_llama, tmp_path, capsys):
    code = cli.main(["simcse", "--base_model", str(tiny_llama), "--train_file", str(tmp_path / "nope.txt"),
                     "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert f"Training data file not found: '{tmp_path / 'nope.txt'}'" in capsys.readouterr().err
    assert cli.main(["mntp", "--base_model", str(tiny_llama), "--train_file", sample_path("fortunes.txt"),
                     "--output_dir", str(tmp_path / "o2"), "--batch_size", "0"]) == 2
    assert "`batch_size` must be > 0" in capsys.readouterr().err
