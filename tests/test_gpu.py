"""On a CUDA device: every batch layout and backend gives the vectors of single texts, and OOM retries work.

Run with ``pytest -m gpu`` (benchmarks/gpu.sh does); skipped without CUDA.
"""
import importlib.util

import pytest
import torch

from l2v_core import LLM2Vec
from tests.tiny import LAYOUT_TEXTS as TEXTS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BACKENDS = ["sdpa", "eager", "flex_attention", "flash_attention_2"]


def _encoder(tiny_llama, backend, dtype):
    if backend == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attention_2 needs the flash-attn package")
    return LLM2Vec.from_pretrained(tiny_llama, attn_implementation=backend, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_layout_gives_the_single_text_vectors(tiny_llama, backend):
    dtype = torch.bfloat16 if backend == "flash_attention_2" else torch.float32
    atol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    enc = _encoder(tiny_llama, backend, dtype)
    single = torch.cat([enc.encode([t], show_progress_bar=False, device="cuda") for t in TEXTS])
    for packing in (False, True):
        enc.packing = packing
        layouts = {b.layout for b in enc.plan(TEXTS, batch_size=4, device="cuda").batches}
        assert layouts <= ({"packed"} if packing else {"dense", "padded"})
        got = enc.encode(TEXTS, batch_size=4, show_progress_bar=False, device="cuda")
        assert torch.allclose(got, single, atol=atol), (backend, packing)


def test_packing_is_the_default_only_with_a_varlen_backend(tiny_llama):
    assert not any(b.packed for b in _encoder(tiny_llama, "sdpa", torch.float32).plan(TEXTS, device="cuda").batches)
    assert all(b.packed for b in _encoder(tiny_llama, "flex_attention", torch.float32).plan(TEXTS, device="cuda").batches)


def test_real_out_of_memory_is_retried_in_halves(tiny_llama):
    enc = _encoder(tiny_llama, "sdpa", torch.float32)
    expected = enc.encode(TEXTS, show_progress_bar=False, device="cuda")
    n = len(enc.plan(TEXTS, batch_size=len(TEXTS), device="cuda").batches[0].indices)
    assert n >= 2
    free, _ = torch.cuda.mem_get_info()
    real_forward, rows = enc.model.forward, []

    def forward_with_a_full_gpu(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        if len(rows) == 1:  # a real allocation failure, from the CUDA allocator itself
            torch.empty(2 * free, dtype=torch.uint8, device="cuda")
        return real_forward(*args, **kwargs)

    enc.model.forward = forward_with_a_full_gpu
    with pytest.warns(UserWarning, match="out of memory"):
        got = enc.encode(TEXTS, batch_size=len(TEXTS), show_progress_bar=False, device="cuda")
    assert torch.allclose(got, expected, atol=1e-5)
    assert rows[:3] == [n, n // 2, n - n // 2]
