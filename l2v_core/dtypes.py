"""Which floating-point type a model runs in: ``auto`` is a property of the processor, decided at run time.

bf16 pays where the hardware has bf16 units: a GPU that supports it, or a CPU with AVX512-BF16 / AMX (there a bf16
forward of a 135M decoder ran 2.5x faster than fp32). On a CPU without them bf16 is emulated and several times
*slower* than fp32, so ``auto`` must never assume: it asks torch's own capability check, and only where that check
cannot answer (torch built without oneDNN, or the check failing) times bf16 against fp32 for about a second.
"""
from __future__ import annotations

import functools
import logging
import time

import torch

logger = logging.getLogger(__name__)

# Every name accepted wherever a dtype is configured (CLIs, training configs, ``from_pretrained``).
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# bf16 must beat fp32 by this much in the micro-benchmark to be chosen: a tie is noise, and fp32 is exact.
BF16_MIN_SPEEDUP = 1.25


def torch_cpu_bf16_check() -> bool | None:
    """oneDNN's answer (as torch exposes it) to "has this CPU bf16 units?"; None where torch cannot tell."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None:
        return None
    try:
        return bool(check())
    except (RuntimeError, AttributeError):
        return None


def bf16_matmul_speedup(seconds: float = 1.0, size: int = 256) -> float:
    """bf16 matmul throughput over fp32 on this CPU, timed for about ``seconds`` in all (both dtypes, alternating
    so that a busy neighbour slows both alike)."""
    a32, b32 = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    torch.mm(a32, b32), torch.mm(a16, b16)  # first calls pick kernels; not timed
    spent = {torch.float32: 0.0, torch.bfloat16: 0.0}
    runs = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or runs < 2:
        for a, b in ((a32, b32), (a16, b16)):
            start = time.perf_counter()
            torch.mm(a, b)
            spent[a.dtype] += time.perf_counter() - start
        runs += 1
    return spent[torch.float32] / max(spent[torch.bfloat16], 1e-12)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 faster than fp32: torch's check, else a 1-second micro-benchmark (once a process)."""
    said = torch_cpu_bf16_check()
    if said is not None:
        return said
    speedup = bf16_matmul_speedup()
    logger.info("torch cannot tell whether this CPU has bf16 units; bf16 matmuls ran %.2fx fp32's speed, so "
                "dtype 'auto' picks %s", speedup, "bfloat16" if speedup >= BF16_MIN_SPEEDUP else "float32")
    return speedup >= BF16_MIN_SPEEDUP


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


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: the name results and cache keys record."""
    return str(dtype).removeprefix("torch.")
