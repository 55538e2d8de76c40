"""Evaluate an encoder held in memory (e.g. one being trained) on mteb tasks, writing nothing.

The texts get the same instructions as under ``l2v-eval`` (``tasks/instructions.py``:
the LLM2Vec paper's table, queries only for retrieval), passed as ``[instruction, text]``
so the instruction tokens stay out of the pooled vector. mteb's own task objects and
evaluators do the scoring, through ``mteb.evaluate`` without a result cache: the weights
change between calls, so no result may be reused.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

from .tasks.instructions import Instructions, load_instructions
from .tasks.local import dataset_source
from .tasks.presets import resolve_tasks

logger = logging.getLogger(__name__)


class LiveEvalError(ValueError):
    """The tasks cannot be evaluated on an in-memory encoder; the message names the task."""


class LiveEncoder(AbsEncoder):
    """mteb encoder around an in-memory :class:`l2v_core.LLM2Vec`; it encodes where the model is."""

    def __init__(self, encoder, *, name: str = "l2v/live", revision: str = "live", batch_size: int = 32,
                 instructions: Instructions | None = None):
        self.encoder = encoder
        self.batch_size = batch_size
        self.instructions = instructions or load_instructions("default")
        self.mteb_model_meta = ModelMeta.create_empty({
            "name": name, "revision": revision, "similarity_fn_name": ScoringFunction.COSINE,
            "framework": ["LLM2Vec", "PyTorch"], "use_instructions": self.instructions.label != "none",
            "open_weights": True, "modalities": ["text"],
        })

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs: Any) -> np.ndarray:
        instruction = self.instructions.for_task(task_metadata, prompt_type)
        texts = [[instruction, text] for text in batch_texts(inputs)]
        vectors = self.encoder.encode(texts, batch_size=int(kwargs.get("batch_size") or self.batch_size),
                                      show_progress_bar=False, convert_to_numpy=True, device=str(self.encoder.device))
        return np.asarray(vectors, dtype=np.float32)


def batch_texts(inputs) -> list[str]:
    """The texts of mteb's batches: ``text``, or ``title`` + ``body`` joined as mteb does; empty
    texts (real corpora have a few, LLM2Vec refuses them) become a single space."""
    from .embedding_cache import texts_of

    return [t if t else " " for t in texts_of(inputs)]


def load_eval_tasks(spec: str, data_dir: str | None = None) -> list:
    """The mteb tasks ``spec`` names (what ``l2v-eval --tasks`` takes), with their data loaded
    (``data_dir`` first, as ``--data-dir``), so a missing dataset fails before any training."""
    from .tasks.kinds import MTEB, task_kind

    tasks = resolve_tasks(spec)
    probes = [t.metadata.name for t in tasks if task_kind(t) != MTEB]
    if probes:
        raise LiveEvalError(f"{', '.join(probes)}: word-level probes are not evaluated during training; "
                            "run l2v-eval --tasks probes on the trained model")
    for task in tasks:
        with dataset_source(data_dir, task.metadata.name):
            if not task.data_loaded:
                task.load_data()
    return tasks


def evaluate_encoder(encoder, tasks: list, *, data_dir: str | None = None, batch_size: int = 32) -> dict[str, float]:
    """Each task's main score (mean over its splits and subsets) for ``encoder`` as it is now.

    ``encoder`` is an ``LLM2Vec`` or a :class:`LiveEncoder` around one (reuse one across calls
    to warn only once about tasks without an instruction).
    """
    import mteb

    live = encoder if isinstance(encoder, LiveEncoder) else LiveEncoder(encoder, batch_size=batch_size)
    scores: dict[str, float] = {}
    for task in tasks:
        source = dataset_source(data_dir, task.metadata.name) if not task.data_loaded else contextlib.nullcontext()
        with source, _no_progress_bars():
            result = mteb.evaluate(live, task, cache=None, raise_error=True, co2_tracker=False,
                                   show_progress_bar=False,
                                   encode_kwargs={"batch_size": batch_size, "show_progress_bar": False})
        score = float(result.task_results[0].get_score())
        if math.isnan(score):
            logger.warning("%s: the main score is NaN", task.metadata.name)
        scores[task.metadata.name] = score
    return scores


@contextlib.contextmanager
def _no_progress_bars():
    """mteb shows ``datasets`` progress bars while it prepares a task's texts; an evaluation in
    the middle of a training run keeps the terminal to the training's own bar."""
    from datasets.utils import logging as datasets_logging

    enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            datasets_logging.enable_progress_bar()
