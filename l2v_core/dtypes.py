"""Which floating-point type a model runs in: ``auto`` is a property of the processor, decided at run time.

bf16 pays where the hardware has bf16 units: a GPU that supports it, or a CPU with AVX512-BF16 / AMX (there a bf16
forward of a 135M decoder ran 2.5x faster than fp32). On a CPU without them bf16 is emulated and several times
*slower* than fp32, so ``auto`` must never assume: it asks torch's own capability check.
"""
from __future__ import annotations

import torch

# Every name accepted wherever a dtype is configured (CLIs, training configs, ``from_pretrained``).
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 units (AVX512-BF16 or AMX), by oneDNN's check as torch exposes it."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except (RuntimeError, AttributeError):
        return False


def bf16_pays(device: str | torch.device) -> bool:
    """Whether bf16 compute is native (and so faster than fp32) on ``device``."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_has_bf16()
    return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """A dtype name (or ``None`` / ``"auto"``) as the torch dtype to load weights in on ``device``."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        return torch.bfloat16 if bf16_pays(device or default_device()) else torch.float32
    if name not in DTYPE_NAMES:
        raise ValueError(f"Unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)
