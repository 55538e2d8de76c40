"""Bidirectional conversion for every architecture x attention backend, on tiny random models."""
import importlib.util

import pytest
import torch
from transformers import AutoModel

from l2v_core import is_bidirectional, make_bidirectional, set_bidirectional
from tests import tiny

BACKENDS = ["eager", "sdpa", "flex_attention", "flash_attention_2"]


def load(model_root, arch, backend):
    if backend == "flash_attention_2" and (not torch.cuda.is_available() or importlib.util.find_spec("flash_attn") is None):
        pytest.skip("flash_attention_2 needs CUDA and the flash-attn package")
    path = tiny.make_model_dir(model_root, arch)
    device = "cuda" if backend == "flash_attention_2" else "cpu"
    dtype = torch.bfloat16 if backend == "flash_attention_2" else torch.float32
    try:
        model = AutoModel.from_pretrained(path, attn_implementation=backend, dtype=dtype)
    except ValueError as err:  # e.g. Gemma2 declares no sdpa support (logit softcapping)
        if "does not support" in str(err):
            pytest.skip(f"transformers does not offer {backend} for {arch}")
        raise
    return model.to(device).eval(), device


def last_state(model, ids, device, attention_mask=None):
    with torch.no_grad():
        return model(input_ids=ids.to(device), attention_mask=None if attention_mask is None else attention_mask.to(device)).last_hidden_state.float().cpu()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_first_token_sees_later_tokens_only_when_bidirectional(model_root, arch, backend):
    model, device = load(model_root, arch, backend)
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])  # batch of one, no padding: the mask-is-None trap
    changed = ids.clone()
    changed[0, -1] = 123
    causal_delta = (last_state(model, ids, device)[0, 0] - last_state(model, changed, device)[0, 0]).abs().max()
    assert causal_delta == 0  # causal: token 0 cannot see token 5

    make_bidirectional(model)
    assert is_bidirectional(model)
    bi_delta = (last_state(model, ids, device)[0, 0] - last_state(model, changed, device)[0, 0]).abs().max()
    assert bi_delta > 1e-3

    set_bidirectional(model, False)  # and back
    assert (last_state(model, ids, device)[0, 0] - last_state(model, changed, device)[0, 0]).abs().max() == 0


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_padding_never_changes_a_text(model_root, arch, backend, side):
    model, device = load(model_root, arch, backend)
    make_bidirectional(model)
    short = [1, 40, 41, 42]
    long = [1] + list(range(100, 130))
    alone = last_state(model, torch.tensor([short]), device)[0]

    width = len(long)
    pad = [2] * (width - len(short))
    row = pad + short if side == "left" else short + pad
    mask_row = [0] * len(pad) + [1] * len(short) if side == "left" else [1] * len(short) + [0] * len(pad)
    ids = torch.tensor([long, row, long[:20] + [2] * (width - 20)])
    mask = torch.tensor([[1] * width, mask_row, [1] * 20 + [0] * (width - 20)])
    if side == "left":
        ids[2] = torch.tensor([2] * (width - 20) + long[:20])
        mask[2] = torch.tensor([0] * (width - 20) + [1] * 20)
    batched = last_state(model, ids, device, mask)[1]
    real = batched[len(pad):] if side == "left" else batched[: len(short)]
    tol = 2e-2 if device == "cuda" else 1e-4
    if side == "left":
        # left padding shifts positions; rotary attention depends only on relative positions
        assert torch.allclose(real, alone, atol=tol * 10, rtol=1e-3)
    else:
        assert torch.allclose(real, alone, atol=tol)


def full_attention_reference(model, ids):
    """The same weights run with an explicit all-visible 4D mask through eager attention."""
    model.config._attn_implementation = "eager"
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
            module.config._attn_implementation = "eager"
    mask = torch.zeros(ids.shape[0], 1, ids.shape[1], ids.shape[1])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_converted_forward_equals_explicit_full_attention(model_root, arch, backend):
    model, device = load(model_root, arch, backend)
    make_bidirectional(model)
    ids = torch.tensor([[1, 11, 12, 13, 14, 15, 16, 17], [1, 21, 22, 23, 24, 25, 26, 27]])
    converted = last_state(model, ids, device)
    reference_model, _ = load(model_root, arch, "eager")  # fresh, never converted
    expected = full_attention_reference(reference_model, ids)
    tol = 3e-2 if device == "cuda" else 1e-4
    assert torch.allclose(converted, expected, atol=tol)


def test_refuses_models_without_attention_flags():
    with pytest.raises(TypeError, match="transformers config"):
        make_bidirectional(torch.nn.Linear(2, 2))
