"""The one mteb encoder of l2v: :class:`L2VEncoder`, around a model named by a :class:`ModelSpec`
(loaded on first use) or around an ``l2v_core.LLM2Vec`` already in memory (evaluation during
training).

It states what decides its vectors besides the texts, for the embedding cache to file them under:
``instruction_for(task, prompt_type)``, the instruction (or prompt) put before a task's texts, and
``settings()``, the model, revision and encoder settings.

Decoder models get ``[instruction, text]`` pairs so LLM2Vec leaves the instruction tokens out of the
pooled vector. Sentence-transformers models are encoded by mteb's own
``SentenceTransformerEncoderWrapper``: with ``default`` instructions it applies the prompts the model
carries, as mteb does for any sentence-transformers model; other instructions replace them.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder, get_prompt_name
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from l2v_core.errors import check_positive_int

from . import model_facts
from .model import ModelLoadFailed, ModelSpec
from .tasks.instructions import Instructions, load_instructions

logger = logging.getLogger(__name__)

SENTENCE_TRANSFORMERS = "sentence-transformers"


def texts_of(inputs) -> list[str]:
    """The texts of an mteb dataloader, as the encoder reads them (documents: title + body, joined as
    mteb joins them)."""
    dataset = getattr(inputs, "dataset", None)
    if "text" in (getattr(dataset, "column_names", None) or ()):
        return list(dataset["text"])
    texts: list[str] = []
    for batch in inputs:
        if "text" in batch:
            texts.extend(batch["text"])
        else:
            titles = batch.get("title") or [""] * len(batch["body"])
            texts.extend(f"{t} {b}".strip() for t, b in zip(titles, batch["body"], strict=True))
    return texts


def encoder_settings(encoder) -> dict[str, Any]:
    """What decides an encoder's vectors besides the instruction and the text, from its mteb metadata
    and its :class:`ModelSpec` (``None`` for a model held in memory)."""
    meta = encoder.mteb_model_meta
    settings: dict[str, Any] = {"model": meta.name, "revision": meta.revision}
    spec = encoder.spec
    if spec is None:
        settings["experiment"] = meta.experiment_name or ""
        return settings
    settings.update(kind=spec.kind, peft=list(spec.peft), pooling=spec.pooling, max_length=spec.max_length,
                    dtype=spec.dtype_name, causal=bool(spec.causal), experiment=meta.experiment_name or "")
    return settings


def sentence_transformer_prompts(folder: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """The prompts of the sentence-transformers model saved in ``folder``, read from its config without
    loading it: (all of them, those whose keys mteb's wrapper accepts, the default prompt's name).
    A sentence-transformers model always has ``query`` and ``document`` prompts (empty unless saved)."""
    config = Path(folder) / "config_sentence_transformers.json"
    saved = json.loads(config.read_text()) if config.is_file() else {}
    prompts = {"query": "", "document": "", **{k: v or "" for k, v in (saved.get("prompts") or {}).items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # mteb logs the keys it drops as well
        accepted, _ = AbsEncoder.validate_task_to_prompt_name(prompts, raise_for_invalid_keys=False)
    return prompts, accepted or {}, saved.get("default_prompt_name")


def _check_batch_size(batch_size) -> None:
    check_positive_int("batch_size", batch_size)


class L2VEncoder(AbsEncoder):
    """mteb encoder for a :class:`ModelSpec` (the model loads on first use) or, through
    :meth:`from_llm2vec`, for an ``LLM2Vec`` held in memory (it encodes where that model is)."""

    def __init__(self, spec: ModelSpec, *, batch_size: int = 32, show_progress_bar: bool = True):
        self._setup(spec, spec.model_meta(), spec.instructions, batch_size, show_progress_bar)

    @classmethod
    def from_llm2vec(cls, model, *, name: str = "l2v/live", revision: str = "live", batch_size: int = 32,
                     instructions: Instructions | None = None) -> L2VEncoder:
        """The encoder of an in-memory ``l2v_core.LLM2Vec`` (e.g. one being trained) under the name and
        revision given, with ``l2v-eval``'s instructions (``default`` unless given)."""
        instructions = instructions or load_instructions("default")
        meta = ModelMeta.create_empty({
            "name": name, "revision": revision, "similarity_fn_name": ScoringFunction.COSINE,
            "framework": ["LLM2Vec", "PyTorch"], "use_instructions": instructions.label != "none",
            "open_weights": True, "modalities": ["text"],
        })
        encoder = cls.__new__(cls)
        encoder._setup(None, meta, instructions, batch_size, False)
        encoder._model = model
        return encoder

    def _setup(self, spec: ModelSpec | None, meta: ModelMeta, instructions: Instructions, batch_size: int,
               show_progress_bar: bool) -> None:
        _check_batch_size(batch_size)
        self.spec = spec
        self.kind = spec.kind if spec is not None else "l2v"
        self.instructions = instructions
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.mteb_model_meta = meta
        self._model = None
        self._st_wrapper = None
        self._st_prompts: tuple[dict[str, str], dict[str, str], str | None] | None = None
        self._load_error: ModelLoadFailed | None = None
        self._warned_empty = False

    # ------------------------------------------------------------------ what decides the vectors
    def settings(self) -> dict[str, Any]:
        """The model, revision and encoder settings its vectors depend on (the embedding cache's key)."""
        return encoder_settings(self)

    def instruction_for(self, task_metadata, prompt_type: PromptType | None = None) -> str:
        """The instruction (or prompt) put before the texts of a task (``prompt_type`` query or document for
        retrieval-like tasks): the instructions', or for a sentence-transformers model with ``default``
        instructions the prompt mteb's wrapper gives it ("" for none). Loads nothing."""
        if self.kind == SENTENCE_TRANSFORMERS and self.instructions.label == "default":
            return self._model_prompt(task_metadata, prompt_type)
        return self.instructions.for_task(task_metadata, prompt_type)

    def _model_prompt(self, task_metadata, prompt_type: PromptType | None) -> str:
        """The prompt mteb's wrapper applies: looked up by task and type among the prompts it accepts, else
        none, so that sentence-transformers applies the model's default prompt (if it has one)."""
        if self._st_prompts is None:
            self._st_prompts = sentence_transformer_prompts(self.spec.base.location)
        prompts, accepted, default = self._st_prompts
        name = get_prompt_name(accepted, task_metadata, prompt_type)
        if name:
            return accepted[name]
        return prompts.get(default, "") if default else ""

    # ------------------------------------------------------------------ the model
    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        """The loaded model: an ``l2v_core.LLM2Vec`` or a ``SentenceTransformer``."""
        if self._model is None:
            if self._load_error is not None:
                raise self._load_error
            logger.info("Loading %s (%s) from %s", self.spec.model_name, self.spec.kind, self.spec.path)
            try:
                self._model = self.spec.load()
            except Exception as err:
                self._load_error = ModelLoadFailed(f"Could not load model {self.spec.path!r}: {err}")
                raise self._load_error from err
            # The loaded weights give exact sizes (GGUF, Hub models and adapters included); the identity
            # (name, revision, experiment) stays what it was, so results are filed where they were looked up.
            self.mteb_model_meta = self.mteb_model_meta.model_copy(update=model_facts.loaded_facts(self._model))
        return self._model

    def _sentence_transformer_wrapper(self):
        if self._st_wrapper is None:
            from mteb.models import SentenceTransformerEncoderWrapper

            with warnings.catch_warnings():
                # It derives a ModelMeta of its own (through deprecated calls) that is never used here.
                warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
                self._st_wrapper = SentenceTransformerEncoderWrapper(self.model)
        return self._st_wrapper

    # ------------------------------------------------------------------ encoding
    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs: Any):
        batch_size = int(kwargs.get("batch_size") or self.batch_size)
        show = bool(kwargs.get("show_progress_bar", self.show_progress_bar))
        if self.kind == SENTENCE_TRANSFORMERS:
            wrapper = self._sentence_transformer_wrapper()
            if self.instructions.label != "default":
                # l2v's instructions replace the model's prompts: this task's, as a prompt mteb finds by task name.
                wrapper.model_prompts = {task_metadata.name: self.instruction_for(task_metadata, prompt_type)}
            vectors = wrapper.encode(inputs, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                                     prompt_type=prompt_type, batch_size=batch_size, show_progress_bar=show)
            return np.asarray(vectors, dtype=np.float32)
        model = self.model
        instruction = self.instruction_for(task_metadata, prompt_type)
        device = self.spec.resolved_device() if self.spec is not None else str(model.device)
        vectors = model.encode([[instruction, text] for text in self._nonempty(texts_of(inputs))],
                               batch_size=batch_size, show_progress_bar=show, convert_to_numpy=True, device=device)
        return np.asarray(vectors, dtype=np.float32)

    def _nonempty(self, texts: list[str]) -> list[str]:
        """LLM2Vec refuses empty strings and real corpora contain a few empty documents: they are encoded
        as a single space."""
        empty = [i for i, t in enumerate(texts) if not t]
        if empty and not self._warned_empty:
            logger.debug("%d empty text(s) in the task data (first at index %d) are encoded as a single space",
                         len(empty), empty[0])
            self._warned_empty = True
        for i in empty:
            texts[i] = " "
        return texts
