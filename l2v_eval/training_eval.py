"""Evaluation during training: mteb tasks scored on the encoder being trained, as a sentence-transformers
evaluator (hand it to ``SentenceTransformerTrainer(evaluator=...)``; for a backbone trained outside a
``SentenceTransformer``, e.g. MNTP's, call :meth:`MtebEvaluator.score_encoder`).

The tasks are resolved and their data loaded when the evaluator is built, so a typo or a missing
dataset fails before any training. Scoring is :func:`l2v_eval.live.evaluate_encoder`: the
instructions of ``l2v-eval`` and mteb's own tasks and evaluators, so an in-run score equals what
``l2v-eval`` gives for the same weights.

Length: the encoder is scored at its own ``LLM2Vec.max_length`` (and ``doc_max_length``), the length
``LLM2Vec.encoder_config()`` writes to ``llm2vec_config.json``, i.e. the one the saved encoder encodes
with. A training pipeline that lowers ``LLM2Vec.max_length`` for training but saves the encoder with
another length passes that length as ``max_length``; it is set for the evaluation and put back after.

A call changes nothing of the training: it runs under ``torch.inference_mode``, and every module's
train/eval mode and every random state (python, numpy, torch, CUDA) are put back afterwards, since
encoding switches the model to eval mode and mteb's evaluators reseed the global generators.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
import warnings
from typing import Iterator

import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from l2v_core.distributed import this_process_only, world
from l2v_core.training.run import saved_rng_states

from .encoder_adapter import L2VEncoder
from .live import LiveEvalError, evaluate_encoder, load_eval_tasks
from .tasks.local import MissingDatasetError
from .tasks.presets import UnknownTaskError
from l2v_core.errors import check_positive_int

logger = logging.getLogger(__name__)

MEAN = "mean"


class EvalTasksError(ValueError):
    """The tasks given to :class:`MtebEvaluator` cannot be evaluated; the message names the task."""


class MtebEvaluator(SentenceEvaluator):
    """Main scores of mteb tasks (mteb's 0-1 scale) and their mean, for the encoder of a ``SentenceTransformer``
    whose first module is ``l2v_core.st_modules.LLM2VecModule``.

    ``tasks``: what ``l2v-eval --tasks`` takes (a preset such as ``l2v-mini`` / ``l2v-real``, a task type,
    mteb task names; a list is joined). ``data_dir``: local task data, as ``l2v-eval --data-dir``.
    ``max_length``: the length to score at; None: the encoder's own ``max_length`` (see the module docstring).
    ``name``: prefix of the returned keys, as sentence-transformers' evaluators do (``""``: bare task names).

    Under ``torch.distributed`` only rank 0 scores; the other ranks return ``{}`` at once and are held by the
    caller's next collective (sentence-transformers' trainer calls evaluators on rank 0 only and broadcasts
    the scores, so a barrier here would deadlock it). Every rank loads the task data when the evaluator is
    built, so a missing dataset fails on all of them alike instead of leaving the others waiting.
    """

    def __init__(self, tasks: str | list[str], data_dir: str | None = None, batch_size: int = 32, name: str = "mteb",
                 max_length: int | None = None):
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_length", max_length, none_means="the encoder's own")
        self.spec = tasks if isinstance(tasks, str) else ",".join(tasks)
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.name = name
        self.max_length = max_length
        self.primary_metric = f"{name}_{MEAN}" if name else MEAN
        try:
            self.tasks = load_eval_tasks(self.spec, data_dir)
        except (UnknownTaskError, LiveEvalError, MissingDatasetError) as err:
            raise EvalTasksError(f"evaluation tasks {self.spec!r}: {err}") from None
        self.task_names = [task.metadata.name for task in self.tasks]
        self._live: L2VEncoder | None = None

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        encoder = getattr(model[0], "encoder", None) if len(model) else None
        if encoder is None or not hasattr(encoder, "encoder_config"):
            raise TypeError(f"MtebEvaluator scores l2v encoders: the model's first module must be "
                            f"l2v_core.st_modules.LLM2VecModule, got {type(model[0]).__name__}")
        scores = self._score(encoder, model, steps)
        if not scores:
            return {}
        metrics = self.prefix_name_to_metrics(scores, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def score_encoder(self, encoder) -> dict[str, float]:
        """The same scores (unprefixed) for a plain ``l2v_core.LLM2Vec``, e.g. MNTP's backbone with mean pooling."""
        return self._score(encoder, encoder, -1)

    def get_config_dict(self) -> dict:
        return {"tasks": self.task_names, "max_length": self.max_length}

    def _score(self, encoder, owner: torch.nn.Module, steps: int) -> dict[str, float]:
        """Task -> main score and the mean, on rank 0 (``{}`` elsewhere); ``owner``'s modes are put back."""
        if world()[0] != 0:
            return {}
        if self._live is None or self._live.model is not encoder:
            self._live = L2VEncoder.from_llm2vec(encoder, name="l2v/training", batch_size=self.batch_size)
        began = time.perf_counter()
        with (training_state_kept(owner), encode_length(encoder, self.max_length), torch.inference_mode(),
              this_process_only(), warnings_summarised()):
            reseed_tasks(self.tasks)
            scores = evaluate_encoder(self._live, self.tasks, data_dir=self.data_dir, batch_size=self.batch_size)
        finite = [value for value in scores.values() if not math.isnan(value)]
        scores[MEAN] = sum(finite) / len(finite) if finite and len(finite) == len(self.tasks) else math.nan
        logger.info("mteb evaluation%s at %d tokens (%.1f s): %s", f" at step {steps}" if steps >= 0 else "",
                    encoder.max_length if self.max_length is None else self.max_length,
                    time.perf_counter() - began, ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
        return scores


def reseed_tasks(tasks: list) -> None:
    """Each task's own generators back to its seed, as a freshly built task has them (mteb's clustering draws
    its subsamples from them): every evaluation of a run scores the same draw, the one ``l2v-eval`` scores."""
    from mteb._set_seed import _set_seed  # what AbsTask.__init__ calls; it also seeds the global generators

    for task in tasks:
        task.rng_state, task.np_rng = _set_seed(task.seed)


@contextlib.contextmanager
def encode_length(encoder, max_length: int | None) -> Iterator[None]:
    """``encoder.max_length`` set to ``max_length`` inside the block (None: left as it is), put back after."""
    if max_length is None:
        yield
        return
    saved, encoder.max_length = encoder.max_length, max_length
    try:
        yield
    finally:
        encoder.max_length = saved


@contextlib.contextmanager
def training_state_kept(module: torch.nn.Module) -> Iterator[None]:
    """Every submodule's train/eval mode and every random state as on entry, put back on exit."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        with saved_rng_states():
            yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def warnings_summarised() -> Iterator[None]:
    """Warnings raised inside the block (sklearn's ConvergenceWarning from mteb's classifiers, ...) become one
    log line with their counts, instead of a dump on the terminal in the middle of a training run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if caught:
        first: dict[str, str] = {}
        for w in caught:
            first.setdefault(w.category.__name__, (str(w.message).strip().splitlines() or [""])[0][:160])
        counts = collections.Counter(w.category.__name__ for w in caught)
        logger.info("%d warning(s) during the evaluation: %s", len(caught),
                    "; ".join(f"{name} x{n} (first: {first[name]})" for name, n in counts.most_common()))
