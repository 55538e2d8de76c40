"""A stack of LoRA adapters (each naming the one before it as its base, as a chain of training stages leaves them)
flattened into one adapter gives the stack's vectors."""
import json

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from l2v_core import LLM2Vec
from l2v_core.adapter_stack import adapter_chain, flatten_adapter_stack
from l2v_core.errors import AdapterError
from l2v_core.loading import load_base_model

TEXTS = ["a short text", "another, somewhat longer text about software packages and their descriptions", "x"]


def _adapter(base, out, seed: int, rank: int, targets: list[str]):
    """A random (non-zero) LoRA adapter trained, as far as its files say, on ``base`` (a model or an adapter)."""
    torch.manual_seed(seed)
    model = load_base_model(str(base), dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=3 * rank, target_modules=targets, init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    config_file = out / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": str(base)}))
    return out


@pytest.fixture
def stack(tiny_llama, tmp_path):
    first = _adapter(tiny_llama, tmp_path / "mntp", 1, 4, ["q_proj", "v_proj", "down_proj"])
    second = _adapter(first, tmp_path / "simcse", 2, 2, ["q_proj", "v_proj", "down_proj"])
    third = _adapter(second, tmp_path / "supervised", 3, 8, ["q_proj", "k_proj", "o_proj", "up_proj"])
    (third / "llm2vec_config.json").write_text(json.dumps({"pooling_mode": "mean", "max_length": 48}))
    return tiny_llama, [first, second, third]


def _vectors(name, **kwargs):
    return LLM2Vec.from_pretrained(str(name), dtype=torch.float32, **kwargs).encode(TEXTS, show_progress_bar=False)


def test_the_chain_is_read_from_the_adapters_own_base_names(stack):
    base, adapters = stack
    assert adapter_chain(adapters[-1]) == (str(base), [str(a) for a in adapters])
    with pytest.raises(AdapterError, match="not a local peft adapter folder"):
        adapter_chain(base)


@pytest.mark.parametrize("dtype, min_cosine", [(torch.float32, 0.999999), (torch.float16, 0.9995)])
def test_one_flat_adapter_gives_the_vectors_of_the_merged_stack(stack, tmp_path, dtype, min_cosine):
    base, adapters = stack
    merged_in_turn = _vectors(adapters[-1])
    flat = flatten_adapter_stack(adapters[-1], tmp_path / "flat", dtype=dtype)

    config = json.loads((flat / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base) and config["r"] == 4 + 2 + 8
    assert json.loads((flat / "llm2vec_config.json").read_text())["max_length"] == 48
    from safetensors import safe_open
    with safe_open(str(flat / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {dtype}

    flat_vectors = _vectors(flat)
    assert F.cosine_similarity(flat_vectors, merged_in_turn).min() >= min_cosine
    # The stack matters: its last adapter alone on the base gives other vectors.
    last_alone = _vectors(base, peft_model_name_or_path=str(adapters[-1]))
    assert F.cosine_similarity(last_alone, merged_in_turn).min() < 0.999


def test_the_output_may_not_overwrite_an_adapter_of_the_stack(stack):
    _, adapters = stack
    with pytest.raises(ValueError, match="one of the adapters being read"):
        flatten_adapter_stack(adapters[-1], adapters[0])
