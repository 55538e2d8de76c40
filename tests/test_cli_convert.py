"""l2v-convert end to end on a tiny model, and its errors."""
import json

import torch

from l2v_core import LLM2Vec
from l2v_cli.convert import main


def test_convert_writes_loadable_directory(tiny_llama, tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"query": "Retrieve passages:"}))
    out = tmp_path / "enc"
    assert main([str(tiny_llama), str(out), "--pooling", "eos_token", "--prompts", str(prompts)]) == 0
    assert "bidirectional, pooling=eos_token" in capsys.readouterr().err
    for name in ("config.json", "model.safetensors", "tokenizer.json", "llm2vec_config.json", "modules.json",
                 "config_sentence_transformers.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "config_sentence_transformers.json").read_text())["prompts"] == {"query": "Retrieve passages:"}
    enc = LLM2Vec.from_pretrained(out)
    expected = LLM2Vec.from_pretrained(tiny_llama, pooling_mode="eos_token").encode(["a text"], show_progress_bar=False)
    assert enc.pooling_mode == "eos_token"
    assert torch.allclose(enc.encode(["a text"], show_progress_bar=False), expected, atol=1e-6)


def test_convert_reports_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "prompts.json"
    bad.write_text("[1, 2]")
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), "--prompts", str(bad)]) == 2
    assert "JSON object" in capsys.readouterr().err
