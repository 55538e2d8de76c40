"""A stack of LoRA adapters as one adapter.

A model trained in stages (MNTP, then SimCSE, then supervised) loads as the reference loads it: each stage's
adapter merged into the model in turn, each adapter folder naming the one before it as its base
(``base_model_name_or_path``; see :mod:`l2v_core.loading`). Every merge adds the adapter's low-rank update
``B·A·alpha/r`` to the same weights, so the whole stack equals one LoRA adapter over the first base whose rank is
the sum of the ranks. peft builds it: ``add_weighted_adapter(combination_type="cat")`` stacks the A matrices, each
scaled by its adapter's ``alpha/r``, and puts the B matrices side by side. The result is one folder that loads
wherever a single adapter loads, and can be stored in half precision to ship small (``bundled-l2v`` is one).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import AdapterError
from .files import atomic_write
from .loading import _MAX_ADAPTER_CHAIN, adapter_base, apply_adapter, load_base_model
from .model_files import check_adapter_files

__all__ = ["adapter_chain", "flatten_adapter_stack"]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_chain(adapter: str | os.PathLike) -> tuple[str, list[str]]:
    """``(base, adapters)``: the first model of the stack that is not an adapter, and the adapter folders in the
    order they are merged (the given one last)."""
    chain, name = [], os.fspath(adapter)
    while os.path.isdir(name) and adapter_base(name) is not None:
        if len(chain) == _MAX_ADAPTER_CHAIN:
            raise AdapterError(f"{os.fspath(adapter)!r}: more than {_MAX_ADAPTER_CHAIN} adapters chained through "
                               "base_model_name_or_path; is an adapter naming itself as its base?")
        check_adapter_files(name)
        chain.append(name)
        name = adapter_base(name)
    if not chain:
        raise AdapterError(f"{os.fspath(adapter)!r} is not a local peft adapter folder (adapter_config.json and "
                           "adapter weights, no full model weights)")
    return name, chain[::-1]


def flatten_adapter_stack(adapter: str | os.PathLike, output_dir: str | os.PathLike,
                          dtype: torch.dtype = torch.float16) -> Path:
    """Write the adapter stack ending in ``adapter`` as one LoRA adapter over its first base, in ``output_dir``.

    The weights are computed in float32 and stored in ``dtype`` (float16 halves the file; the loaded adapter is
    cast back to the model's dtype). The other files of ``adapter``'s folder (``llm2vec_config.json``, the
    tokenizer, ...) are copied, so the folder loads with the same pooling and lengths.
    """
    base, chain = adapter_chain(adapter)
    output = Path(output_dir)
    if output.resolve() in {Path(p).resolve() for p in chain}:
        raise ValueError(f"output_dir {str(output)!r} is one of the adapters being read; choose another folder")
    names = [f"stage{i}" for i in range(len(chain))]
    model = apply_adapter(load_base_model(base, dtype=torch.float32), chain[0], adapter_name=names[0])
    for name, path in zip(names[1:], chain[1:]):
        model.load_adapter(path, adapter_name=name)
    model.add_weighted_adapter(names, [1.0] * len(names), "stack", combination_type="cat")
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output) as tmp:
        model.save_pretrained(tmp, selected_adapters=["stack"])
        saved = Path(tmp) / "stack"  # peft writes an adapter not named "default" into a folder of its name
        weights = {key: value.to(dtype).contiguous() for key, value in load_file(saved / ADAPTER_FILES[1]).items()}
        config = (saved / ADAPTER_FILES[0]).read_text()
    for item in Path(chain[-1]).iterdir():
        if item.is_file() and item.name not in ADAPTER_FILES and not item.name.startswith("adapter_model"):
            shutil.copy2(item, output / item.name)
    atomic_write(output / ADAPTER_FILES[1], lambda p: save_file(weights, p, metadata={"format": "pt"}))
    atomic_write(output / ADAPTER_FILES[0], lambda p: Path(p).write_text(_with_base(config, base)))
    return output


def _with_base(config_json: str, base: str) -> str:
    """peft records the base model object's own name; the flat adapter names the stack's first base as the
    first adapter of the stack named it (``bundled``, a Hub id or a path)."""
    import json

    config = json.loads(config_json)
    config["base_model_name_or_path"] = base
    config["inference_mode"] = True
    return json.dumps(config, indent=2, sort_keys=True) + "\n"
