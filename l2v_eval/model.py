"""The model side of an evaluation: what a ``--model`` name is and its identity (the mteb encoder
that wraps it is :class:`l2v_eval.encoder_adapter.L2VEncoder`).

A name may be an l2v / llm2vec directory, a ``.gguf`` file, ``bundled`` / ``bundled-l2v``, a
Hugging Face Hub id (fetched like mteb and transformers fetch it, or read from the cache
offline), an LLM2Vec entry of mteb's model registry (its base and adapters, see
:mod:`l2v_eval.registry`), a base model plus peft adapters, or any sentence-transformers model
(so encoder baselines land in the same tables). l2v's own converted directories also carry
``modules.json``, with a module type from ``l2v_core.``; those load through
:class:`l2v_core.LLM2Vec`, plain sentence-transformers models through ``SentenceTransformer``.

Names become files in one place, :func:`l2v_core.loading.resolve_source`: :meth:`ModelSpec.resolve`
looks the model and its adapters up there once (the only step that may reach the Hub), and the
spec keeps the resolved sources, which :meth:`ModelSpec.load` loads without looking them up again.

The identity (mteb ``ModelMeta`` name + revision) is known before the model is loaded (content
digests of local models' files, each read once and remembered, the commit of Hub models, the
registry's revision of registry entries), so finished work can be skipped before paying for a load.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mteb.models.model_meta import ModelMeta, ScoringFunction

from l2v_core import hub, loading
from l2v_core.dtypes import DTYPE_NAMES, dtype_name, resolve_dtype
from l2v_core.errors import HubUnreachableError, ModelLoadError, NotCachedError, NotOnHubError, check_positive_int
from l2v_core.loading import ModelSource
from l2v_core.model_files import adapter_config
from l2v_core.pooling import check_pooling_mode

from . import model_facts
from .registry import RegistryModel, registry_model
from .tasks.instructions import Instructions, load_instructions

logger = logging.getLogger(__name__)


class ModelSpecError(ValueError):
    """The model arguments do not describe a loadable model."""


class ModelLoadFailed(RuntimeError):
    """The model could not be loaded; no task can run, so the evaluation stops."""


def detect_kind(location: str) -> str:
    """What a resolved model's file or folder holds: ``gguf`` for a GGUF file, ``l2v`` for l2v's converted
    directories, ``sentence-transformers`` for a plain ST directory, ``hf`` for anything LLM2Vec loads itself
    (an HF decoder directory, an llm2vec directory, an adapter-only MNTP checkpoint)."""
    if str(location).endswith(".gguf"):
        return "gguf"
    modules = Path(location) / "modules.json"
    if not modules.is_file():
        return "hf"
    try:
        entries = json.loads(modules.read_text())
    except json.JSONDecodeError as err:
        raise ModelSpecError(f"{modules} is not valid JSON: {err}") from None
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise ModelSpecError(f"{modules} must hold a list of module entries")
    if any(str(m.get("type", "")).startswith("l2v_core.") for m in entries):
        return "l2v"
    return "sentence-transformers"


def check_model_settings(*, pooling: str | None = None, max_length: int | None = None, dtype: str | None = None,
                         name: str | None = None) -> None:
    """Refuse settings no model accepts, before anything is looked up or loaded."""
    if pooling is not None:
        try:
            check_pooling_mode(pooling)
        except ValueError as err:
            raise ModelSpecError(str(err)) from None
    if max_length is not None:
        check_positive_int("max_length", max_length, error=ModelSpecError)
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ModelSpecError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    if name is not None and "/" not in name:
        raise ModelSpecError(f"A model name must look like 'organization/name', got {name!r}")


def _resolve(name: str, revision: str | None = None, what: str = "model") -> ModelSource:
    """``name`` resolved by l2v_core without its weights (local paths as they are, Hub ids by fetching their
    configs, or from the cache offline); l2v_core's one-line error as a :class:`ModelSpecError`."""
    try:
        return loading.resolve_source(name, hub.HubOptions(revision=revision), what=what, weights=False)
    except ModelLoadError as err:
        raise ModelSpecError(str(err)) from err


def _resolve_registry_adapter(entry: RegistryModel, adapter: str) -> ModelSource:
    """A registry adapter at the registry's revision; where the Hub (or the offline cache) has no such
    revision of it, its default branch, with a warning (results still go under the registry revision,
    as mteb files them)."""
    from huggingface_hub.errors import RevisionNotFoundError

    revision = entry.adapter_revision if adapter == entry.name else None
    try:
        return _resolve(adapter, revision, "adapter")
    except ModelSpecError as err:
        cause = err.__cause__
        unavailable = isinstance(cause, (NotCachedError, HubUnreachableError)) or (
            isinstance(cause, NotOnHubError) and isinstance(cause.__cause__, RevisionNotFoundError))
        if revision is None or not unavailable:
            raise
        why = {NotCachedError: "offline and not in the local cache",
               HubUnreachableError: "the Hub is out of reach and it is not in the local cache"}.get(
            type(cause), "the Hub has no such revision")
        logger.warning("%s: mteb's registry revision %s of %s is not available (%s); using its default branch",
                       entry.name, revision, adapter, why)
        return _resolve(adapter, None, "adapter")


def _fingerprint(parts: list[ModelSource]) -> str:
    """Hash of the names and contents (sha256) of every file of local parts, and of the commits of
    Hub parts.

    Changes whenever a file's bytes do, even at equal size and modification time, so two local
    models with the same directory name never share a result folder or cached vectors. Contents
    are read once per file (see :mod:`l2v_eval.file_hashes`).
    """
    from .file_hashes import file_digest

    h = hashlib.sha1()
    for part in parts:
        if part.on_hub:
            h.update(f"hub:{part.name}@{part.commit}\n".encode())
            continue
        p = Path(part.location)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and ".cache" not in f.parts)
        for f in files:
            rel = f.name if p.is_file() else str(f.relative_to(p))
            h.update(f"{rel}\0{file_digest(f)}\n".encode())
    return h.hexdigest()[:12]


_GENERIC_DIR_NAMES = {"model", "models", "final", "output", "outputs", "merged", "encoder", "adapter"}


def _display_name(part: ModelSource) -> str:
    """A Hub repository's name; else the file stem or directory name (a generic one such as ``model``
    or ``final`` gets its parent's name too)."""
    if part.on_hub:
        return part.name.rsplit("/", 1)[-1]
    p = Path(part.location).resolve()
    name = p.stem if p.suffix == ".gguf" else (p.name or part.location)
    if name.lower() in _GENERIC_DIR_NAMES and p.parent.name:
        name = f"{p.parent.name}-{name}"
    return name


@dataclass
class ModelSpec:
    """Everything that decides which vectors a model produces, validated up front.

    ``path`` is the model name as given (see the module doc) and ``peft`` the adapter names as given;
    ``base`` and ``adapters`` are what l2v_core resolved them to (build a spec with :meth:`resolve`;
    the constructor reads local files only). ``causal`` keeps causal attention (else the direction the
    model was saved with).
    """

    path: str
    base: ModelSource
    adapters: tuple[ModelSource, ...] = ()
    registry: RegistryModel | None = None
    peft: tuple[str, ...] = ()
    pooling: str | None = None
    max_length: int | None = None
    device: str | None = None
    dtype: str | None = None
    name: str | None = None
    instructions: Instructions = field(default_factory=lambda: load_instructions("default"))
    causal: bool = False

    @classmethod
    def resolve(cls, path: str | os.PathLike, peft: tuple[str | os.PathLike, ...] = (), *,
                hub_revision: str | None = None, **settings: Any) -> "ModelSpec":
        """The spec of model ``path`` (at ``hub_revision``, a branch, tag or commit of a Hub model) with the
        ``peft`` adapters: the names are looked up once, here (a registry entry: its base and adapters)."""
        path, peft = os.fspath(path), tuple(os.fspath(a) for a in peft)
        check_model_settings(**{k: settings.get(k) for k in ("pooling", "max_length", "dtype", "name")})
        entry = None if os.path.exists(path) or not hub.looks_like_hub_id(path) else registry_model(path)
        if entry is None:
            base = _resolve(path, hub_revision)
            adapters = tuple(_resolve(a, None, "adapter") for a in peft)
        elif peft:
            raise ModelSpecError(f"{path!r} is mteb's registry entry for {entry.base} + {', '.join(entry.adapters)}; "
                                 f"--peft cannot be added to it (give --model {entry.base} and every --peft instead)")
        else:
            base = _resolve(entry.base)
            adapters = tuple(_resolve_registry_adapter(entry, a) for a in entry.adapters)
        return cls(path, base, adapters, registry=entry, peft=peft, **settings)

    def __post_init__(self) -> None:
        self.adapters, self.peft = tuple(self.adapters), tuple(self.peft)
        check_model_settings(pooling=self.pooling, max_length=self.max_length, dtype=self.dtype, name=self.name)
        self.kind = detect_kind(self.base.location)
        for adapter in self.adapters:
            if adapter.gguf_file or adapter_config(adapter.path) is None:
                raise ModelSpecError(f"--peft {adapter.name!r} is not a peft adapter directory "
                                     "(no adapter_config.json)")
        if self.kind == "sentence-transformers" and (self.adapters or self.pooling or self.causal):
            raise ModelSpecError(f"{self.path!r} is a sentence-transformers model; --peft, --pooling and --causal "
                                 "apply only to decoder models")
        # Fixed now: the files as they are when the run starts identify its results.
        if self.registry is not None and self.registry.revision:
            self._revision = self.registry.revision
        elif self.base.on_hub and not self.adapters:
            self._revision = self.base.commit
        else:
            self._revision = _fingerprint([self.base, *self.adapters])

    # ------------------------------------------------------------------ identity
    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        if self.registry is not None:
            return self.registry.name
        base = self.base.name if self.base.on_hub else f"local/{_display_name(self.base)}"
        return "+".join([base, *(_display_name(a) for a in self.adapters)])

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def experiment_kwargs(self) -> dict[str, Any] | None:
        """Settings that change the vectors, recorded only where they differ from the model's own.

        mteb stores such runs under ``experiments/<kwargs>`` next to the plain run, so
        e.g. a run without instructions never overwrites the default one.
        """
        kwargs: dict[str, Any] = {}
        if self.instructions.label != "default":
            kwargs["instructions"] = self.instructions.label
        if self.pooling is not None:
            kwargs["pooling"] = self.pooling
        if self.max_length is not None:
            kwargs["max_length"] = self.max_length
        if self.dtype_name != "float32":  # fp32 is the reference; any other dtype (auto's bf16 too) is kept apart
            kwargs["dtype"] = self.dtype_name
        if self.causal:
            kwargs["attention"] = "causal"
        return kwargs or None

    @property
    def experiment(self) -> str:
        return ModelMeta.create_empty({"experiment_kwargs": self.experiment_kwargs}).experiment_name or ""

    def model_meta(self) -> ModelMeta:
        if self.registry is not None and not self.name:
            # mteb's own entry (parameters, training data, ...), filed under its name and revision.
            return self.registry.meta.model_copy(update={"experiment_kwargs": self.experiment_kwargs,
                                                         "use_instructions": self.instructions.label != "none"})
        similarity = ScoringFunction.COSINE
        if self.kind == "sentence-transformers":
            config = Path(self.base.location) / "config_sentence_transformers.json"
            if config.is_file():
                saved = json.loads(config.read_text()).get("similarity_fn_name")
                similarity = ScoringFunction(saved) if saved else similarity
        framework = {"sentence-transformers": ["Sentence Transformers", "PyTorch"], "gguf": ["LLM2Vec", "GGUF"]}
        adapters = [a.name for a in self.adapters]
        return ModelMeta.create_empty(
            {
                "name": self.model_name,
                "revision": self.revision,
                "similarity_fn_name": similarity,
                "framework": framework.get(self.kind, ["LLM2Vec", "PyTorch"]),
                "use_instructions": self.instructions.label != "none",
                "open_weights": True,
                "max_tokens": self.max_length,
                "experiment_kwargs": self.experiment_kwargs,
                "modalities": ["text"],
                **model_facts.file_facts(self.base.location, [a.location for a in self.adapters], self.max_length),
                **model_facts.lineage(self.base.name, self.base.location, adapters),
            }
        )

    # ------------------------------------------------------------------ loading
    def resolved_device(self) -> str:
        if self.device and self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self):
        """The dtype the model runs in: ``auto`` (or None) resolved for the device (bf16 where it has bf16 units)."""
        return resolve_dtype(self.dtype, self.resolved_device())

    @property
    def dtype_name(self) -> str:
        """The resolved dtype's name (never "auto"): what results and the embedding cache record."""
        return dtype_name(self.torch_dtype())

    def load(self):
        """The loaded model: an ``l2v_core.LLM2Vec`` or a ``SentenceTransformer``, from the resolved sources
        (a Hub model's weights are fetched at the commit it was resolved to)."""
        device = self.resolved_device()
        if self.kind == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            # sentence-transformers knows which files its modules read, so it fetches them itself: a Hub model
            # by its id pinned to the resolved commit, a local one from its folder.
            where = {"model_name_or_path": self.base.repo_id, "revision": self.base.commit} if self.base.on_hub \
                else {"model_name_or_path": self.base.path}
            return SentenceTransformer(**where, device=device, trust_remote_code=False,
                                       model_kwargs={"dtype": self.torch_dtype()})
        from l2v_core import LLM2Vec

        model = LLM2Vec.from_pretrained(
            loading.with_weights(self.base),
            peft_model_name_or_path=[loading.with_weights(a, "adapter") for a in self.adapters] or None,
            enable_bidirectional=False if self.causal else None,
            pooling_mode=self.pooling,
            max_length=self.max_length,
            dtype=self.torch_dtype(),
        )
        model.model.to(device)
        return model
