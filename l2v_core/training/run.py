"""What the three stages share around the trainers: the run record and resume checks, ``metrics.csv``
from the trainer's own logs, evaluation that leaves training untouched, and the result of a run."""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
from transformers import TrainerCallback

from ..files import atomic_write, write_json
from .config import ConfigError, TrainConfig
from .data import DataError

logger = logging.getLogger(__name__)

RUN_CONFIG = "l2v_train.json"
METRICS = "metrics.csv"
METRIC_COLUMNS = ("step", "loss", "lr", "tokens", "seconds")
EVAL_PREFIX = "eval_"
EVAL_MEAN = "eval_mean"
# Keys a resumed run may change without changing the result of the steps already taken.
RESUMABLE_CHANGES = {"max_steps", "save_steps", "save_total_limit", "merge_output", "resume", "progress_bar",
                     "output_dir", "gradcache_chunk_size", "eval_tasks", "eval_steps", "eval_data_dir",
                     "report_to", "logging_steps", "logging_dir", "push_to_hub", "hub_model_id", "hub_token",
                     "hub_strategy", "hub_private_repo", "run_name", "save_strategy", "dataloader_num_workers"}
# Keys that split the global batch over processes: a resumed run may change them (to run on
# another number of processes) as long as the global batch stays the same.
BATCH_LAYOUT = {"batch_size", "global_batch_size", "processes"}
# Learning-rate schedules whose shape depends on max_steps: extending such a run would change the past.
SCHEDULES_OVER_MAX_STEPS = {"linear", "cosine", "cosine_with_restarts", "polynomial"}


@dataclass
class TrainResult:
    stage: str
    output_dir: str
    adapter_dir: str
    merged_dir: str | None
    steps: int
    resumed_from: int
    final_loss: float | None
    metrics_file: str
    main_process: bool = True  # False on the other processes of a multi-process run
    eval_scores: dict[str, float] | None = None  # the last evaluation's scores by metrics.csv column


def run_record(config: TrainConfig, num_processes: int) -> dict:
    """What ``l2v_train.json`` holds: the stage, every setting, and how the batch was split."""
    return json.loads(json.dumps({"stage": config.stage, **config.to_dict(), "processes": num_processes,
                                  "global_batch": config.global_batch(num_processes)}))


def check_resume(config: TrainConfig, out: Path, num_processes: int) -> str | None:
    """The checkpoint to resume from, after checking the saved run used the same settings.

    The number of processes may change as long as the global batch stays the same.
    """
    from transformers.trainer_utils import get_last_checkpoint

    latest = get_last_checkpoint(str(out)) if out.is_dir() else None
    if latest is None:
        return None
    if not config.resume:
        raise ConfigError(f"{out} already holds checkpoints of a run ({Path(latest).name}); set resume true to "
                          "continue it, or choose another output_dir")
    saved_file = out / RUN_CONFIG
    if not saved_file.is_file():
        return latest
    saved, now = json.loads(saved_file.read_text()), run_record(config, num_processes)
    if saved.get("global_batch") != now["global_batch"]:
        wanted = saved.get("global_batch")
        raise ConfigError(
            f"Cannot resume the run in {out}: its global batch was {wanted} ({saved.get('processes')} process(es)), "
            f"now it would be {now['global_batch']}. The data order depends on the global batch: set "
            f"global_batch_size {wanted}.")
    if saved.get("max_steps") != config.max_steps and config.lr_scheduler in SCHEDULES_OVER_MAX_STEPS:
        raise ConfigError(
            f"Cannot resume the run in {out} with max_steps {config.max_steps}: it started with max_steps "
            f"{saved.get('max_steps')} and its lr_scheduler {config.lr_scheduler!r} depends on max_steps. Use "
            f"max_steps {saved.get('max_steps')}, or a new output_dir for a longer run (or lr_scheduler constant / "
            "constant_with_warmup, which can be extended).")
    ignored = RESUMABLE_CHANGES | BATCH_LAYOUT | {"global_batch"}
    changed = sorted(k for k in set(saved) | set(now) if k not in ignored and saved.get(k) != now.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"Cannot resume the run in {out}: settings changed since it started ({details}). "
                          "Use the original settings, or another output_dir for a new run.")
    return latest


@contextlib.contextmanager
def saved_rng_states():
    """Every random state (python, numpy, torch, CUDA) as it was on entry, put back on exit."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if cuda else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


class RngPreserving(SentenceEvaluator):
    """Runs an evaluator and puts every random state back, so a run with evaluation trains exactly
    like one without (mteb seeds the global generators; dropout and masks draw from them).
    With ``encoder`` and ``eval_length``, the encoder reads up to ``eval_length`` tokens during the evaluation
    (its own length, not the shorter training length) and goes back to the training length after."""

    def __init__(self, evaluator: SentenceEvaluator, encoder=None, eval_length: int | None = None):
        super().__init__()
        self.evaluator = evaluator
        self.encoder, self.eval_length = encoder, eval_length
        self.name = getattr(evaluator, "name", "")
        self.primary_metric = getattr(evaluator, "primary_metric", None)
        self.greater_is_better = getattr(evaluator, "greater_is_better", True)
        self.last_scores: dict[str, float] | None = None

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        with saved_rng_states(), torch.no_grad(), self._evaluation_length():
            scores = self.evaluator(model, output_path=output_path, epoch=epoch, steps=steps)
        self.last_scores = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
        return scores

    @contextlib.contextmanager
    def _evaluation_length(self):
        if self.encoder is None or self.eval_length is None:
            yield
            return
        training_length, self.encoder.max_length = self.encoder.max_length, self.eval_length
        try:
            yield
        finally:
            self.encoder.max_length = training_length

    def __getattr__(self, name):  # model-card and trainer code read attributes of the wrapped evaluator
        if name in ("evaluator", "encoder", "eval_length"):
            raise AttributeError(name)
        return getattr(self.evaluator, name)


def read_metrics_rows(path: Path, keep_until: int) -> tuple[list[str], list[dict]]:
    """Rows of an existing ``metrics.csv`` up to step ``keep_until``. A damaged file (a row cut short by a
    kill, a garbage line, a repeated step) is repaired: such rows are dropped, with a warning naming the file."""
    if not path.is_file():
        return list(METRIC_COLUMNS), []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = list(csv.reader(f))
    header = lines[0] if lines and lines[0][:1] == ["step"] else list(METRIC_COLUMNS)
    rows, dropped, last = [], 0, 0
    for line in lines[1:] if lines and lines[0][:1] == ["step"] else lines:
        try:
            step = int(line[0])
            values = [float(v) for v in line[1:] if v != ""]
        except (ValueError, IndexError):
            dropped += 1
            continue
        if len(line) != len(header) or step <= last or not values:
            dropped += 1
            continue
        if step <= keep_until:
            rows.append(dict(zip(header, line)))
            last = step
    if dropped:
        logger.warning("%s: dropped %d damaged or repeated row(s) on resume", path, dropped)
    return header, rows


class MetricsCallback(TrainerCallback):
    """``metrics.csv`` from the trainer's logs: one row per logged step (step, loss, lr, tokens, seconds) plus
    a column per evaluation score (``eval_<name>``), filled on the steps that were evaluated."""

    def __init__(self, path: Path, resumed_from: int, evaluator: RngPreserving | None):
        self.path, self.evaluator = path, evaluator
        self.columns, self.rows = read_metrics_rows(path, resumed_from) if resumed_from else (list(METRIC_COLUMNS), [])
        self.pending: dict | None = None
        self.began = self.seconds = 0.0
        self.last_loss: float | None = None
        self.last_scores: dict[str, float] | None = None
        self.tokens_seen = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.tokens_seen = state.num_input_tokens_seen
        if state.is_world_process_zero:
            self._rewrite()

    def on_step_begin(self, args, state, control, **kwargs):
        self.flush(state)
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self.began

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
            tokens = state.num_input_tokens_seen - self.tokens_seen
            self.tokens_seen = state.num_input_tokens_seen
            self.pending = {"step": state.global_step, "loss": f"{logs['loss']:.6g}",
                            "lr": f"{logs.get('learning_rate', 0.0):.6g}", "tokens": tokens or "",
                            "seconds": f"{self.seconds:.4f}"}
            self.seconds = 0.0
        scores = self.evaluator.last_scores if self.evaluator is not None else None
        if scores and any(k.startswith(EVAL_PREFIX) for k in logs):
            self.last_scores = {f"{EVAL_PREFIX}{k}": v for k, v in scores.items()}
            self.pending = self.pending or {"step": state.global_step}
            self.pending.update({k: f"{v:.6g}" for k, v in self.last_scores.items()})
            self.evaluator.last_scores = None

    def on_save(self, args, state, control, **kwargs):
        self.flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.flush(state)

    def flush(self, state) -> None:
        if self.pending is None or not state.is_world_process_zero:
            self.pending = None
            return
        row, self.pending = self.pending, None
        self.rows.append(row)
        new = [c for c in row if c not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)

    def _rewrite(self) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, write)


class AdapterCheckpoints:
    """Trainer mixin: a checkpoint's model part is the LoRA adapter alone (safetensors), not the frozen base.
    The optimizer, scheduler and random states are the trainer's own files, read with ``weights_only=True``."""

    peft_model: torch.nn.Module

    def evaluate(self, *args, **kwargs):
        # The trainer's evaluation draws from the global generators too (a data loader's seed), not only
        # the evaluator: the whole of it runs inside saved random states, so training goes on unchanged.
        with saved_rng_states():
            return super().evaluate(*args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        self.peft_model.save_pretrained(output_dir, save_embedding_layers=False)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = Path(resume_from_checkpoint) / "adapter_model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"Checkpoint {resume_from_checkpoint} has no adapter_model.safetensors; "
                              "remove that folder to resume from an earlier checkpoint, or use a new output_dir")
        set_peft_model_state_dict(self.peft_model, load_file(weights))


class CheckpointError(RuntimeError):
    """A checkpoint could not be read safely; the message names it."""


def begin_run(config: TrainConfig, args, examples: int, unit: str,
              remedy: str = "Lower batch_size or add data.") -> None:
    """What every stage does once its data is read and before its model loads: refuse data that does not fill
    one global batch (the trainers drop the last, incomplete batch, so they would train on nothing), record the
    run's settings (main process) and seed, so the fresh LoRA is drawn from the seed, not from whatever ran
    before. ``examples`` counts ``unit``s (texts, blocks of N tokens, ...)."""
    from transformers import set_seed

    world = num_processes()
    if examples < config.global_batch(world):
        raise DataError(f"Not one full batch: {config.train_file} gives {examples} {unit}, fewer than "
                        f"{config.global_batch(world)} items (batch_size x processes, or global_batch_size). {remedy}")
    if args.process_index == 0:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(config.output_dir) / RUN_CONFIG, run_record(config, world), indent=2)
    set_seed(config.seed)


def metrics_callback(config: TrainConfig, resume_from: str | None, evaluator, encoder=None,
                     eval_length: int | None = None) -> MetricsCallback:
    """The run's ``metrics.csv`` writer; its ``evaluator`` (when one is given) runs inside saved random states
    (and with ``encoder`` reading ``eval_length`` tokens, see :class:`RngPreserving`)."""
    wrapped = RngPreserving(evaluator, encoder, eval_length) if evaluator is not None else None
    return MetricsCallback(Path(config.output_dir) / METRICS, checkpoint_step(resume_from), wrapped)


def checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0


def train_and_save(trainer, config: TrainConfig, args, metrics: MetricsCallback, resume_from: str | None,
                   save: Callable[[], dict[str, str | None]]) -> TrainResult:
    """``trainer.train`` from ``resume_from`` (a checkpoint file that is not plain tensors is refused, not run),
    then, on the main process, ``save()`` (the folders it wrote) and the push of the result; every process
    waits for that."""
    import pickle

    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"Checkpoint {resume_from} holds a file that is not plain tensors and was not loaded "
                              f"({first[:160]}); remove that checkpoint folder or use a new output_dir") from None
    out = Path(config.output_dir)
    written: dict[str, str | None] = {"adapter_dir": str(out / "adapter"), "merged_dir": None}
    if trainer.is_world_process_zero():
        written = save()
        push_result(args, written)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(stage=config.stage, output_dir=str(out), adapter_dir=written.get("adapter_dir") or "",
                       merged_dir=written.get("merged_dir"), steps=config.max_steps,
                       resumed_from=checkpoint_step(resume_from), final_loss=metrics.last_loss,
                       metrics_file=str(out / METRICS), main_process=trainer.is_world_process_zero(),
                       eval_scores=metrics.last_scores)


def push_result(args, written: dict[str, str | None]) -> None:
    """With ``push_to_hub``, upload the trained result (the merged encoder when written, else the adapter) to
    ``hub_model_id``. The trainers' own push would upload their checkpoint layout (a bare adapter at the top
    level of output_dir), which is not what l2v writes as the result."""
    if not args.push_to_hub:
        return
    from huggingface_hub import create_repo, upload_folder

    folder = written.get("merged_dir") or written["adapter_dir"]
    repo = create_repo(args.hub_model_id or Path(args.output_dir).name, private=args.hub_private_repo,
                       token=args.hub_token, exist_ok=True).repo_id
    upload_folder(repo_id=repo, folder_path=folder, token=args.hub_token, commit_message="l2v-train result",
                  ignore_patterns=["checkpoint-*", ".data_cache/*", ".staging.tmp/*", "runs/*"])


def num_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))
