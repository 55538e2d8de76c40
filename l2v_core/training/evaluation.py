"""Evaluation during training: the encoder being trained, scored on held-out tasks.

With ``eval_tasks`` set, the tasks are resolved and their data loaded before the model
(a typo or a missing dataset fails at once), then every ``eval_steps`` steps and at the
end the main process scores the encoder the stage produces with mteb
(``l2v_eval.live``), in eval mode under ``torch.inference_mode``; the other processes
wait. Train mode and every RNG state are restored afterwards (mteb's evaluators reseed
the global RNGs), so a run with evaluation trains exactly like one without.
"""
from __future__ import annotations

import logging
import math
import time

import torch

from ..distributed import this_process_only
from .checkpoints import gather_codes, rng_state, set_rng_state
from .config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

EVAL_PREFIX = "eval_"
EVAL_MEAN = "eval_mean"
EVAL_BATCH_SIZE = 32


def score_column(task_name: str) -> str:
    """The metrics.csv column of a task's main score."""
    return f"{EVAL_PREFIX}{task_name}"


class TrainingEvaluator:
    """Scores an encoder on ``config.eval_tasks`` at the steps ``config.eval_steps`` names."""

    def __init__(self, config: TrainConfig, accelerator):
        self.config = config
        self.accelerator = accelerator
        self.tasks: list = []  # loaded mteb tasks, on the main process only
        self.task_names = self._load(config, accelerator)
        self._live = None

    def _load(self, config: TrainConfig, accelerator) -> list[str]:
        """Resolve the tasks (and load them on the main process); every process learns the outcome."""
        from l2v_eval.live import LiveEvalError, load_eval_tasks
        from l2v_eval.tasks.local import MissingDatasetError
        from l2v_eval.tasks.presets import UnknownTaskError, resolve_tasks

        error, names = None, []
        try:
            if accelerator.is_main_process:
                tasks = self.tasks = load_eval_tasks(config.eval_tasks, config.eval_data_dir)
            else:  # names only; the data stays on the main process, the one that evaluates
                tasks = resolve_tasks(config.eval_tasks)
            names = [t.metadata.name for t in tasks]
        except (UnknownTaskError, LiveEvalError, MissingDatasetError) as err:
            error = ConfigError(f"`eval_tasks` {config.eval_tasks!r}: {err}")
        failed = gather_codes(accelerator, int(error is not None))
        if error is not None:
            raise error
        if any(failed):
            raise ConfigError(f"`eval_tasks` {config.eval_tasks!r} could not be loaded on another process")
        return names

    def columns(self) -> list[str]:
        return [score_column(name) for name in self.task_names] + [EVAL_MEAN]

    def due(self, step: int) -> bool:
        every = self.config.eval_steps
        return step == self.config.max_steps or bool(every and step % every == 0)

    def evaluate(self, step: int, encoder_of, module: torch.nn.Module) -> dict[str, float] | None:
        """Scores by metrics.csv column (main process; None elsewhere). ``encoder_of()`` gives the
        encoder to score, sharing the weights being trained; ``module`` goes back to train mode."""
        scores = None
        if self.accelerator.is_main_process:
            scores = self._score(step, encoder_of(), module)
        self.accelerator.wait_for_everyone()
        return scores

    def _score(self, step: int, encoder, module: torch.nn.Module) -> dict[str, float]:
        from l2v_eval.live import LiveEncoder, evaluate_encoder

        if self._live is None or self._live.encoder is not encoder:
            self._live = LiveEncoder(encoder, name=f"l2v-train/{self.config.stage}", batch_size=EVAL_BATCH_SIZE)
        was_training = module.training
        saved_rng = rng_state()
        began = time.perf_counter()
        try:
            module.eval()
            with torch.inference_mode(), this_process_only():
                by_task = evaluate_encoder(self._live, self.tasks,
                                           data_dir=self.config.eval_data_dir, batch_size=EVAL_BATCH_SIZE)
        finally:
            set_rng_state(saved_rng)
            module.train(was_training)
        scores = {score_column(name): value for name, value in by_task.items()}
        finite = [v for v in by_task.values() if not math.isnan(v)]
        scores[EVAL_MEAN] = sum(finite) / len(finite) if len(finite) == len(by_task) else math.nan
        logger.info("Step %d evaluation (%.1f s): %s", step, time.perf_counter() - began,
                    ", ".join(f"{name} {value:.4f}" for name, value in by_task.items()))
        return scores
