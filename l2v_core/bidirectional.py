"""One mechanism that makes any transformers decoder attend bidirectionally.

transformers 5 builds every decoder's mask through ``masking_utils``: when the
config says ``is_causal = False``, ``create_causal_mask`` (and its sliding-window
sibling) return a bidirectional padding mask instead of a causal one. The
attention kernels (sdpa, flash, flex) additionally read each attention module's
own ``is_causal`` flag when they get no mask at all (batch of one, no padding),
so both switches are flipped. No modeling file is copied or patched.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers import PretrainedConfig


def _configs(model: torch.nn.Module) -> Iterator[PretrainedConfig]:
    """The model's config and any nested text/decoder configs (multimodal wrappers)."""
    seen: set[int] = set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig) and id(config) not in seen:
            seen.add(id(config))
            yield config
            for sub_name in ("text_config", "decoder", "language_config"):
                sub = getattr(config, sub_name, None)
                if isinstance(sub, PretrainedConfig) and id(sub) not in seen:
                    seen.add(id(sub))
                    yield sub


def _attention_modules(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    for module in model.modules():
        if isinstance(getattr(module, "is_causal", None), bool) and not isinstance(module, type(model)):
            yield module


def set_bidirectional(model: torch.nn.Module, enable: bool = True) -> torch.nn.Module:
    """Switch ``model`` (in place) to bidirectional attention, or back to causal.

    Works for every decoder whose masks come from ``transformers.masking_utils``
    (Llama, Mistral, Qwen2/3, Gemma/Gemma2, Phi3, ...) under eager, sdpa, flex and
    flash attention. Padding stays masked. Returns the same model.
    """
    configs = list(_configs(model))
    if not configs:
        raise TypeError(f"{type(model).__name__} has no transformers config; expected a transformers model")
    modules = list(_attention_modules(model))
    if not modules:
        raise TypeError(
            f"{type(model).__name__} has no attention module with an `is_causal` flag; "
            "only decoders built on transformers' shared attention code can be converted"
        )
    for config in configs:
        config.is_causal = not enable
        if hasattr(config, "use_bidirectional_attention"):
            # Gemma-family configs have their own switch; keep it in step so a
            # saved config reloads with the same attention in plain transformers.
            config.use_bidirectional_attention = bool(enable) or None
    for module in modules:
        module.is_causal = not enable
    return model


def make_bidirectional(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model`` attend bidirectionally (in place); see :func:`set_bidirectional`."""
    return set_bidirectional(model, True)


def is_bidirectional(model: torch.nn.Module) -> bool:
    """True when every attention module and config of ``model`` is non-causal."""
    modules = list(_attention_modules(model))
    return bool(modules) and all(not m.is_causal for m in modules) and all(
        getattr(c, "is_causal", True) is False for c in _configs(model)
    )

