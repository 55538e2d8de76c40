"""Hub ids wherever a path is accepted, read through huggingface_hub from a cache on disk in the
real layout; the errors that tell apart a missing repository, an offline cache miss and an
unreachable Hub; and the checks made on the files before they are read."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from huggingface_hub import constants
from transformers import AutoModel

from l2v_core import LLM2Vec, is_bidirectional, loading, make_bidirectional
from l2v_cli.convert import main as convert
from l2v_core.errors import AdapterError, HubUnreachableError, ModelLoadError, NotCachedError, NotOnHubError
from tests import hubcache, tiny

TEXTS = ["A man is playing a guitar.", ["Retrieve semantically similar text:", "Two women walk on the beach."]]


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-home")
    return home, hubcache.reference_repos(home / "hub", home / "work")


@pytest.fixture
def hub(hub_home, monkeypatch):
    """The cache as huggingface_hub's default, offline (as the test session is)."""
    home, repos = hub_home
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return repos


def by_hand(base_dir, *adapters, name=None):
    """The reference's recipe written out: bidirectional base, MNTP adapter merged, last adapter on top."""
    from peft import PeftModel

    model = make_bidirectional(AutoModel.from_pretrained(base_dir))
    for k, adapter in enumerate(adapters):
        model = PeftModel.from_pretrained(model, adapter)
        if k < len(adapters) - 1:
            model = model.merge_and_unload()
    return LLM2Vec(model, loading.load_tokenizer(str(base_dir)), name_or_path=name)


def test_released_layout_loads_by_hub_id(hub):
    enc = LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path=hubcache.SUPERVISED)
    # The chat template is keyed on the base the MNTP adapter names, as in the reference.
    assert enc.name_or_path == hubcache.MISTRAL
    assert enc.pooling_mode == "mean" and is_bidirectional(enc.model)
    expected = by_hand(hub["base_dir"], hub["mntp_dir"], hub["supervised_dir"], name=hubcache.MISTRAL)
    vectors = enc.encode(TEXTS, show_progress_bar=False)
    torch.testing.assert_close(vectors, expected.encode(TEXTS, show_progress_bar=False), rtol=1e-5, atol=1e-5)
    plain = LLM2Vec.from_pretrained(hubcache.MISTRAL).encode(TEXTS, show_progress_bar=False)
    assert not torch.allclose(plain, vectors, atol=1e-3)  # the adapters did something
    # The repository's modeling file (auto_map) is neither needed nor run: it raises when imported.
    assert (hub[hubcache.MNTP] / "modeling_mistral_encoder.py").is_file()


def test_revisions_of_base_and_adapter(hub, hub_home, tmp_path):
    home, _ = hub_home
    other = hubcache.lora_adapter(hub["base_dir"], tmp_path / "v2", 7, hubcache.MNTP, merge_first=hub["mntp_dir"])
    v2 = hubcache.commit_of("v2")
    hubcache.add_repo(home / "hub", hubcache.SUPERVISED, other, commit=v2, branch="v2")
    main = LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path=hubcache.SUPERVISED)
    by_branch = LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path=hubcache.SUPERVISED, peft_revision="v2")
    by_commit = LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path=[hubcache.SUPERVISED],
                                        peft_revision=[v2])
    a, b, c = (e.encode(TEXTS, show_progress_bar=False) for e in (main, by_branch, by_commit))
    assert not torch.allclose(a, b, atol=1e-4)
    torch.testing.assert_close(b, c)
    with pytest.raises(NotCachedError) as info:
        LLM2Vec.from_pretrained(hubcache.MNTP, revision="v9")
    message = str(info.value)
    assert hubcache.MNTP in message and "v9" in message and "\n" not in message


def test_hub_errors_name_the_id_and_what_to_do(hub, monkeypatch, tmp_path):
    typo = "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntpp"
    with pytest.raises(NotCachedError) as info:
        LLM2Vec.from_pretrained(typo)
    message = str(info.value)
    assert typo in message and "offline mode is on" in message and f"hf download {typo}" in message
    with pytest.raises(NotCachedError, match="adapter 'org/no-such-adapter'"):
        LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path="org/no-such-adapter")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(HubUnreachableError, match=f"could not be reached .*{typo}"):
        LLM2Vec.from_pretrained(typo)
    # Online with the Hub down, what is cached still loads.
    assert LLM2Vec.from_pretrained(hubcache.MISTRAL).hidden_size == 32

    server = hubcache.start_missing_repo_hub()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(NotOnHubError, match=f"{typo}.*no repository of that name exists"):
            LLM2Vec.from_pretrained(typo)
        with pytest.raises(NotOnHubError, match="Revision 'nope' does not exist"):
            LLM2Vec.from_pretrained(hubcache.MNTP, revision="nope")
        out = tmp_path / "out"
        assert convert([typo, str(out)]) == 2
        assert not out.exists()
    finally:
        server.shutdown()


def test_convert_takes_hub_ids_and_a_revision(hub, tmp_path, capsys):
    out = tmp_path / "enc"
    assert convert([hubcache.MNTP, str(out), "--peft", hubcache.SUPERVISED, "--revision", "main"]) == 0
    saved = LLM2Vec.from_pretrained(out).encode(TEXTS, show_progress_bar=False)
    direct = LLM2Vec.from_pretrained(hubcache.MNTP, peft_model_name_or_path=hubcache.SUPERVISED)
    torch.testing.assert_close(saved, direct.encode(TEXTS, show_progress_bar=False), rtol=1e-5, atol=1e-5)
    assert convert(["org/not-cached", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "'org/not-cached'" in err and not (tmp_path / "none").exists()


def _adapter_of(base_dir, out, seed, named):
    return hubcache.lora_adapter(base_dir, out, seed, named)


def test_adapter_trained_on_another_base(model_root, tiny_llama, tmp_path, caplog):
    sibling = tiny.make_model_dir(model_root, "llama", seed=1)
    on_sibling = _adapter_of(sibling, tmp_path / "on-sibling", 3, str(sibling))
    with caplog.at_level(logging.WARNING, logger="l2v_core.loading"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=on_sibling)
    warned = [r.getMessage() for r in caplog.records if "was trained on" in r.getMessage()]
    assert len(warned) == 1 and str(sibling) in warned[0] and "same architecture" in warned[0]

    caplog.clear()
    on_self = _adapter_of(tiny_llama, tmp_path / "on-self", 3, str(tiny_llama))
    with caplog.at_level(logging.WARNING, logger="l2v_core.loading"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=on_self)
    assert not [r for r in caplog.records if "was trained on" in r.getMessage()]

    mistral = tiny.make_model_dir(model_root, "mistral")  # same weight shapes as the tiny Llama
    on_mistral = _adapter_of(mistral, tmp_path / "on-mistral", 3, str(mistral))
    with pytest.raises(AdapterError, match="a mistral model; it cannot be applied to this llama model"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=on_mistral)
    out = tmp_path / "converted"
    assert convert([str(tiny_llama), str(out), "--peft", str(on_mistral)]) == 2 and not out.exists()


def test_pickled_adapter_is_refused(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(AutoModel.from_pretrained(tiny_llama), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert (tmp_path / "pickled" / "adapter_model.bin").is_file()
    with pytest.raises(AdapterError) as info:
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=tmp_path / "pickled")
    message = str(info.value)
    assert str(tmp_path / "pickled" / "adapter_model.bin") in message and "safetensors" in message
    assert "\n" not in message


def test_truncated_safetensors_are_named(tiny_llama, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=f"{weights} is truncated"):
        LLM2Vec.from_pretrained(broken)
    adapter = _adapter_of(tiny_llama, tmp_path / "adapter", 0, str(tiny_llama))
    file = adapter / "adapter_model.safetensors"
    file.write_bytes(file.read_bytes()[:-10])
    with pytest.raises(AdapterError, match=f"{file} is truncated"):
        LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=adapter)


def test_load_report_is_one_line(tiny_llama, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    with caplog.at_level(logging.WARNING, logger="l2v_core.loading"):
        LLM2Vec.from_pretrained(tiny_llama)  # a *ForCausalLM checkpoint: its LM head is left out quietly
    assert not caplog.records

    partial = tmp_path / "partial"
    shutil.copytree(tiny_llama, partial)
    state = load_file(partial / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, partial / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="l2v_core.loading"):
        LLM2Vec.from_pretrained(partial)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 weight(s) missing" in lines[0] and "layers.1.mlp.up_proj.weight" in lines[0]

    reshaped = tmp_path / "reshaped"
    shutil.copytree(tiny_llama, reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    config["intermediate_size"] = 48
    (reshaped / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"wrong shape .*mlp.*\(64, 32\) in the checkpoint vs \(48, 32\)"):
        LLM2Vec.from_pretrained(reshaped)


def test_mntp_refuses_a_model_without_its_lm_head(tiny_llama, tmp_path):
    from l2v_core.training import ConfigError, load_config, train

    headless = tmp_path / "headless"
    AutoModel.from_pretrained(tiny_llama).save_pretrained(headless)
    loading.load_tokenizer(str(tiny_llama)).save_pretrained(headless)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny.CORPUS * 4))
    config = load_config("mntp", None, dict(base_model=str(headless), train_file=str(corpus),
                                             output_dir=str(tmp_path / "run"), max_steps=1, batch_size=2,
                                             max_length=16, progress_bar=False))
    with pytest.raises(ConfigError, match=r"no trained LM head \(lm_head.weight"):
        train("mntp", config)
    assert not (tmp_path / "run" / "adapter").exists()


def test_training_takes_hub_ids_and_records_them(hub, tmp_path):
    from l2v_core.training import load_config, train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny.CORPUS * 4))
    config = load_config("mntp", None, dict(base_model=hubcache.MISTRAL, train_file=str(corpus),
                                             output_dir=str(tmp_path / "run"), max_steps=1, batch_size=2,
                                             max_length=16, progress_bar=False))
    train("mntp", config)
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == hubcache.MISTRAL
    assert LLM2Vec.from_pretrained(adapter).encode(TEXTS, show_progress_bar=False).shape == (2, 32)


def test_portable_base_references(hub, smollm2_gguf):
    from l2v_core.loading import portable_reference

    assert portable_reference("bundled") == "bundled"
    assert portable_reference(smollm2_gguf) == "bundled"  # never a path into site-packages
    assert portable_reference(str(hub[hubcache.MISTRAL])) == hubcache.MISTRAL  # a cache snapshot: its Hub id
    assert portable_reference(hubcache.MNTP) == hubcache.MNTP


def test_bundled_resolves_without_the_network(smollm2_gguf, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    source = loading.resolve_source("bundled")
    assert source.gguf_file and source.path + "/" + source.gguf_file == smollm2_gguf


def test_bundled_l2v_resolves_to_the_shipped_adapter(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "BUNDLED_L2V_DIR", tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="'bundled-l2v' is SmolLM2-135M plus the encoder adapter .* has no adapter"):
        LLM2Vec.from_pretrained("bundled-l2v")
    folder = _adapter_of(tiny_llama, tmp_path / "bundled-l2v", 5, str(tiny_llama))
    (folder / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "weighted_mean"}))
    monkeypatch.setattr(loading, "BUNDLED_L2V_DIR", folder)
    enc = LLM2Vec.from_pretrained("bundled-l2v")
    assert enc.pooling_mode == "weighted_mean"
    expected = LLM2Vec.from_pretrained(tiny_llama, peft_model_name_or_path=folder, pooling_mode="weighted_mean")
    torch.testing.assert_close(enc.encode(TEXTS, show_progress_bar=False),
                               expected.encode(TEXTS, show_progress_bar=False), rtol=1e-5, atol=1e-5)
    out = tmp_path / "converted"
    assert convert(["bundled-l2v", str(out)]) == 0 and LLM2Vec.from_pretrained(out).pooling_mode == "weighted_mean"


def test_causal_survives_a_reload(tiny_llama, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "causal"
    assert convert([str(tiny_llama), str(out), "--causal"]) == 0
    assert json.loads((out / "llm2vec_config.json").read_text())["bidirectional"] is False
    reloaded = LLM2Vec.from_pretrained(out)
    assert not is_bidirectional(reloaded.model)
    causal = LLM2Vec.from_pretrained(tiny_llama, enable_bidirectional=False)
    torch.testing.assert_close(reloaded.encode(TEXTS, show_progress_bar=False),
                               causal.encode(TEXTS, show_progress_bar=False), rtol=1e-5, atol=1e-5)
    assert is_bidirectional(LLM2Vec.from_pretrained(out, enable_bidirectional=True).model)
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    assert not is_bidirectional(st[0].encoder.model)

    bidirectional = tmp_path / "bidirectional"
    assert convert([str(tiny_llama), str(bidirectional)]) == 0
    # Not written for bidirectional models, so the reference's loader (which refuses unknown keys) reads the file.
    assert "bidirectional" not in json.loads((bidirectional / "llm2vec_config.json").read_text())
    assert is_bidirectional(LLM2Vec.from_pretrained(bidirectional).model)
