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

from .encoder_adapter import L2VEncoder
from .tasks.local import dataset_source
from .tasks.presets import resolve_tasks

logger = logging.getLogger(__name__)


class LiveEvalError(ValueError):
    """The tasks cannot be evaluated on an in-memory encoder; the message names the task."""


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

    ``encoder`` is an ``LLM2Vec`` or an :class:`L2VEncoder` around one (``L2VEncoder.from_llm2vec``; reuse
    one across calls to warn only once about tasks without an instruction).
    """
    import mteb

    live = encoder if isinstance(encoder, L2VEncoder) else L2VEncoder.from_llm2vec(encoder, batch_size=batch_size)
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
