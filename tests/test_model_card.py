"""The model card l2v-convert writes: sentence-transformers card data (YAML header), l2v's facts, and a usage
snippet that works when copied (it is extracted from the card and run here)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from l2v_cli.convert import main as convert
from l2v_core.model_card import base_license


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def converted(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "tiny-encoder"
    assert convert([str(tiny_llama), str(out), "--pooling", "mean"]) == 0
    return out


def test_card_has_sentence_transformers_metadata_and_l2v_facts(converted, tiny_llama):
    card = ModelCard.load(converted / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert {"sentence-transformers", "l2v"} <= set(card.data.tags)
    assert f"**Base model:** `{tiny_llama}`" in card.text
    assert "**Pooling:** mean" in card.text and "**Attention:** bidirectional" in card.text
    assert "Given a web search query, retrieve relevant passages that answer the query:" in card.text


def test_usage_snippet_runs_when_copied(converted):
    text = (converted / "README.md").read_text()
    usage = text[text.index("## Usage"):]
    assert code_blocks(usage, "bash")[0].strip() == "pip install l2v"
    snippet = code_blocks(usage, "python")[0]
    assert repr(str(converted.resolve())) in snippet
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(2, 32)" in done.stdout or "[2, 32]" in done.stdout, done.stdout  # documents x hidden size
    assert "tensor([[" in done.stdout  # the similarities


def test_model_id_goes_into_the_snippet(tiny_llama, tmp_path):
    out = tmp_path / "published"
    assert convert([str(tiny_llama), str(out), "--model-id", "someone/tiny-encoder"]) == 0
    snippet = code_blocks((out / "README.md").read_text(), "python")[0]
    assert "load_sentence_transformer('someone/tiny-encoder')" in snippet


def test_license_of_the_bundled_base_comes_from_its_gguf_header(smollm2_gguf):
    assert base_license("bundled") == "apache-2.0"
    assert base_license("no/such-model-anywhere") is None
