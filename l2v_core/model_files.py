"""A model's files, read and checked before they load, and what transformers reports after.

Truncated ``.safetensors`` files (read from their headers only), pickled ``adapter_model.bin``
adapters and damaged GGUF files are refused with the file named; an ``adapter_config.json`` is
read with its errors named; transformers' load report (weights missing, unused or of the wrong
shape) becomes one :class:`LoadReport`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import AdapterError, ModelLoadError, first_line
from .files import read_json_object

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def has_full_weights(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in WEIGHT_FILES)


def adapter_config(path: str) -> dict | None:
    file = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(file):
        return None
    return read_json_object(file, AdapterError)


def check_safetensors(file: str, error: type[ModelLoadError] = ModelLoadError) -> None:
    """Refuse a truncated or corrupt ``.safetensors`` file by reading its header only."""
    size = os.path.getsize(file)
    again = "download or copy it again"
    with open(file, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise error(f"{file} is truncated or is not a safetensors file ({size} bytes); {again}")
        try:
            header = json.loads(f.read(length))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError):
            raise error(f"{file} is not a valid safetensors file (unreadable header); {again}") from None
    if 8 + length + end > size:
        raise error(f"{file} is truncated: {size} bytes, but its header describes {8 + length + end}; {again}")


def check_adapter_files(path: str) -> None:
    if adapter_config(path) is None:
        raise AdapterError(f"{path!r} holds no adapter_config.json; it is not a peft adapter")
    safe = os.path.join(path, "adapter_model.safetensors")
    pickled = os.path.join(path, "adapter_model.bin")
    if os.path.isfile(safe):
        check_safetensors(safe, AdapterError)
    elif os.path.isfile(pickled):
        raise AdapterError(
            f"{pickled} is a pickled PyTorch file; l2v does not unpickle adapters (a pickle can run arbitrary code). "
            f"Convert it to safetensors where you trust it: python -c \"import torch; from safetensors.torch import "
            f"save_file; save_file(torch.load('{pickled}', weights_only=True), '{safe}')\""
        )
    else:
        raise AdapterError(f"{path!r} has an adapter_config.json but no adapter_model.safetensors")


def check_gguf_file(path: str, err: BaseException) -> None:
    """After a failed GGUF load: a cut file fails inside whatever transformers reads first (the tokenizer:
    "cannot reshape array ..."), so name the file when gguf's own reader cannot read it either."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as check:  # the reader's errors (ValueError, struct.error, ...) all mean a damaged file
        raise ModelLoadError(f"{path} is not a complete GGUF file ({os.path.getsize(path):,} bytes; "
                             f"{first_line(check)}): truncated or damaged, e.g. by an interrupted download; "
                             "fetch it again") from err


def check_weight_files(folder: str) -> None:
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            check_safetensors(os.path.join(folder, name))


@dataclass(frozen=True)
class LoadReport:
    """What transformers could not match between a checkpoint and the model class (its load report)."""

    source: str
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple, tuple], ...] = ()

    @classmethod
    def of(cls, info: dict, model, label: str) -> "LoadReport":
        unexpected = sorted(info.get("unexpected_keys") or ())
        if model.get_output_embeddings() is None:
            # A *ForCausalLM checkpoint loaded into the headless model: its LM head is left out by design.
            unexpected = [k for k in unexpected if not k.startswith("lm_head.")]
        mismatched = tuple(sorted((k, tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys") or ()))
        return cls(label, tuple(sorted(info.get("missing_keys") or ())), tuple(unexpected), mismatched)

    def newly_initialised(self, keys) -> list[str]:
        fresh = set(self.missing) | {k for k, _, _ in self.mismatched}
        return [k for k in keys if k in fresh]

    def summary(self) -> str | None:
        def some(keys) -> str:
            return ", ".join(list(keys)[:4]) + (f", ... ({len(keys) - 4} more)" if len(keys) > 4 else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} weight(s) missing from the checkpoint, initialised at random "
                         f"({some(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} checkpoint weight(s) unused ({some(self.unexpected)})")
        if self.mismatched:
            shapes = [f"{k} {a} in the checkpoint vs {b} in the model" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} weight(s) of the wrong shape ({some(shapes)})")
        return f"Loading {self.source}: " + "; ".join(parts) if parts else None
