"""The training loop shared by every stage.

A stage supplies a :class:`Task` (the trainable module, its data order, how to
build a batch and compute the loss, how to save the result); this module owns
everything else: accelerate setup, optimizer and LR schedule, gradient
accumulation and clipping, checkpoints and resume, evaluation during training,
the progress bar and the metrics CSV.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import atomic_write, write_json
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import BATCH_LAYOUT, RESUMABLE_CHANGES, ConfigError, TrainConfig
from .data import BatchSchedule
from .evaluation import EVAL_MEAN, TrainingEvaluator

logger = logging.getLogger(__name__)

RUN_CONFIG = "l2v_train.json"
METRICS = "metrics.csv"
METRIC_COLUMNS = ("step", "loss", "lr", "tokens", "seconds")


class Task:
    """What a stage plugs into the loop. Subclasses set the attributes in ``__init__``."""

    module: torch.nn.Module  # prepared by accelerate; ``loss`` is given the prepared version
    peft_model: torch.nn.Module  # whose adapter is checkpointed
    schedule: BatchSchedule

    def batch(self, items: list[int], index: int) -> dict:
        """CPU tensors of the micro-batch made of ``items``; ``index`` counts micro-batches over the run."""
        raise NotImplementedError

    def loss(self, module: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        """The scalar loss of ``batch`` and the number of real (non-pad) tokens in it."""
        raise NotImplementedError

    def backward(self, module: torch.nn.Module, batch: dict, accelerator) -> tuple[torch.Tensor, int]:
        """Accumulate the gradients of ``batch``'s loss; return (loss, tokens) as ``loss`` does.

        Tasks that cannot backpropagate their loss in one call (GradCache) override this;
        they must go through ``accelerator.backward`` for loss scaling and accumulation.
        """
        loss, tokens = self.loss(module, batch)
        accelerator.backward(loss)
        return loss, tokens

    def current_encoder(self):
        """The encoder this stage produces (an ``LLM2Vec``), sharing the weights being trained:
        what evaluation during training scores."""
        raise NotImplementedError

    def save(self, output_dir: str) -> dict[str, str | None]:
        """Write the trained result; return {"adapter_dir": ..., "merged_dir": ...}."""
        raise NotImplementedError


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


class MetricsLog:
    """``metrics.csv``: one row per optimizer step (step, loss, lr, tokens, seconds), plus one
    column per evaluation task's main score and their mean (``eval_<task>``, ``eval_mean``),
    filled on the steps that were evaluated and empty on the others.

    ``tokens`` and ``seconds`` are those of that step (all processes), so tokens/s of a
    step is one division. On resume, rows after the checkpoint's step are dropped
    (the killed run may have logged steps that are now trained again); score columns of
    tasks no longer evaluated are kept.
    """

    def __init__(self, path: Path, keep_until: int | None, enabled: bool, eval_columns: Sequence[str] = ()):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows, old_columns = [], []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                old_columns = list(reader.fieldnames or [])
                rows = [r for r in reader if int(r["step"]) <= keep_until]
        scores = [c for c in (*old_columns, *eval_columns) if c not in METRIC_COLUMNS and c != EVAL_MEAN]
        has_mean = EVAL_MEAN in old_columns or EVAL_MEAN in eval_columns
        self.columns = [*METRIC_COLUMNS, *dict.fromkeys(scores), *([EVAL_MEAN] if has_mean else [])]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)

    def add(self, step: int, loss: float, lr: float, tokens: int, seconds: float,
            scores: dict[str, float] | None = None) -> None:
        if not self.enabled:
            return
        row = {"step": step, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}", "tokens": tokens, "seconds": f"{seconds:.4f}",
               **{column: f"{value:.6g}" for column, value in (scores or {}).items()}}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, restval="").writerow(row)


def _run_record(config: TrainConfig, num_processes: int) -> dict:
    """What ``l2v_train.json`` holds: the stage, every setting, and how the batch was split."""
    return json.loads(json.dumps({"stage": config.stage, **config.to_dict(), "processes": num_processes,
                                  "global_batch": config.global_batch(num_processes)}))


def _check_resume(config: TrainConfig, out: Path, num_processes: int) -> Path | None:
    """The checkpoint to resume from, after checking the saved run used the same settings.

    The number of processes may change (the adapter, optimizer and data order do not depend
    on it) as long as the global batch stays the same: the data order is drawn per global batch.
    """
    latest = latest_checkpoint(str(out))
    if latest is None:
        return None
    if not config.resume:
        raise ConfigError(
            f"{out} already holds checkpoints of a run ({latest.name}); set resume true to continue it, "
            "or choose another output_dir"
        )
    saved_file = out / RUN_CONFIG
    if saved_file.is_file():
        with open(saved_file) as f:
            saved = json.load(f)
        now = _run_record(config, num_processes)
        ignored = RESUMABLE_CHANGES | BATCH_LAYOUT
        if "global_batch" not in saved:  # recorded before the batch layout was: compare per-process settings
            ignored = RESUMABLE_CHANGES | {"processes", "global_batch"}
        elif saved["global_batch"] != now["global_batch"]:
            wanted = saved["global_batch"]
            split = (f" (or batch_size {wanted // num_processes} per process)" if wanted % num_processes == 0
                     else f"; {wanted} does not split over {num_processes} processes, use a number that divides it")
            raise ConfigError(
                f"Cannot resume the run in {out}: its global batch was {wanted} ({saved['processes']} process(es)), "
                f"now it would be {now['global_batch']} ({num_processes} process(es) x batch_size "
                f"{config.process_batch_size(num_processes)}). The data order depends on the global batch: "
                f"set global_batch_size {wanted}{split}."
            )
        changed = sorted(k for k in set(saved) | set(now) if k not in ignored and saved.get(k) != now.get(k))
        if changed:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ConfigError(
                f"Cannot resume the run in {out}: settings changed since it started ({details}). "
                "Use the original settings, or another output_dir for a new run."
            )
    return latest


def _write_run_config(config: TrainConfig, out: Path, num_processes: int) -> None:
    write_json(out / RUN_CONFIG, _run_record(config, num_processes), indent=2)


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # accelerate keeps its settings in process-wide singletons and refuses a second run in the
    # same process with other mixed-precision settings; each run starts from fresh settings.
    # The process group (PartialState) is kept, so this is safe under `accelerate launch`.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(mixed_precision="bf16" if config.bf16 else "no",
                       gradient_accumulation_steps=config.gradient_accumulation_steps)


@dataclass
class StepRecord:
    """What one optimizer step did, over all processes."""

    loss: float
    lr: float
    tokens: int
    seconds: float


class Trainer:
    """One training run: set up in ``__init__``, then :meth:`restore`, :meth:`train`, :meth:`finish`."""

    def __init__(self, config: TrainConfig, build_task):
        from accelerate.utils import set_seed

        self.config = config
        self.accelerator = accelerator = make_accelerator(config)
        self.out = Path(config.output_dir)
        self.resuming = _check_resume(config, self.out, accelerator.num_processes) is not None
        if accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_run_config(config, self.out, accelerator.num_processes)
        # Tasks and their data before the model: a bad eval_tasks fails in seconds.
        self.evaluator = TrainingEvaluator(config, accelerator) if config.eval_tasks else None
        set_seed(config.seed)
        self.task: Task = build_task(config, accelerator)
        self._build_optimizer()

    def _build_optimizer(self) -> None:
        from transformers import get_scheduler

        config = self.config
        self.params = [p for p in self.task.module.parameters() if p.requires_grad]
        if not self.params:
            raise RuntimeError("No trainable parameters: the LoRA target modules matched nothing")
        optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # The scheduler steps once per optimizer step; it is not handed to accelerate, which would
        # step it once per process.
        self.scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                                       num_training_steps=config.max_steps)
        self.module, self.optimizer = self.accelerator.prepare(self.task.module, optimizer)

    def restore(self) -> int:
        """Load the newest readable checkpoint when resuming; return the step training starts from."""
        self.start, self.elapsed = 0, 0.0
        if self.resuming:
            state = load_checkpoint(str(self.out), self.accelerator, self.task.peft_model, self.optimizer,
                                    self.scheduler)
            self.start, self.elapsed = int(state["step"]), float(state.get("seconds", 0.0))
            logger.info("Resuming %s training from step %d", self.config.stage, self.start)
        self.metrics = MetricsLog(self.out / METRICS, keep_until=self.start if self.resuming else None,
                                  enabled=self.accelerator.is_main_process,
                                  eval_columns=self.evaluator.columns() if self.evaluator else [])
        return self.start

    def train(self) -> tuple[float | None, dict[str, float] | None]:
        """Train from the restored step to ``max_steps``; return the last loss and the last scores."""
        config, accelerator = self.config, self.accelerator
        bar = tqdm(total=config.max_steps, initial=self.start, desc=f"{config.stage}", unit="step",
                   disable=not (accelerator.is_main_process and config.progress_bar), dynamic_ncols=True)
        self.module.train()
        last_loss, last_scores = None, None
        for step in range(self.start, config.max_steps):
            record = self.step(step)
            done = step + 1
            scores = None
            if self.evaluator is not None and self.evaluator.due(done):
                scores = last_scores = self.evaluator.evaluate(done, self.task.current_encoder, self.module)
            last_loss = record.loss
            self.metrics.add(done, record.loss, record.lr, record.tokens, record.seconds, scores)
            shown = {"eval": f"{last_scores[EVAL_MEAN]:.4f}"} if last_scores else {}
            bar.set_postfix(loss=f"{record.loss:.4f}", lr=f"{record.lr:.2e}", **shown)
            bar.update(1)
            if done == config.max_steps or (config.save_steps and done % config.save_steps == 0):
                save_checkpoint(str(self.out), done, accelerator, self.task.peft_model, self.optimizer,
                                self.scheduler, {"seconds": self.elapsed, "stage": config.stage,
                                                 "processes": accelerator.num_processes},
                                keep=config.save_total_limit)
        bar.close()
        return last_loss, last_scores

    def step(self, step: int) -> StepRecord:
        """One optimizer step: ``gradient_accumulation_steps`` micro-batches, clipping, update."""
        config, accelerator, task = self.config, self.accelerator, self.task
        began = time.perf_counter()
        accum = config.gradient_accumulation_steps
        step_loss = torch.zeros((), device=accelerator.device)
        step_tokens = 0
        for micro in range(accum):
            index = step * accum + micro
            batch = task.batch(task.schedule.local_batch(index, accelerator.process_index,
                                                         accelerator.num_processes), index)
            with accelerator.accumulate(self.module), accelerator.autocast():
                loss, tokens = task.backward(self.module, batch, accelerator)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.params, config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach().float() / accum
            step_tokens += tokens
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        loss_value = accelerator.reduce(step_loss, reduction="mean").item()
        tokens_all = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), reduction="sum"))
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{config.stage} loss became {loss_value} at step {step + 1}; "
                                     "lower learning_rate or use float32 / bf16 instead of float16")
        seconds = time.perf_counter() - began
        self.elapsed += seconds
        return StepRecord(loss_value, lr, tokens_all, seconds)

    def finish(self, last_loss: float | None, last_scores: dict[str, float] | None) -> TrainResult:
        """Write the trained result (main process) and describe the run."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        written: dict[str, str | None] = {"adapter_dir": str(self.out / "adapter"), "merged_dir": None}
        if accelerator.is_main_process:
            written = self.task.save(str(self.out))
        accelerator.wait_for_everyone()
        return TrainResult(stage=self.config.stage, output_dir=str(self.out), adapter_dir=written["adapter_dir"] or "",
                           merged_dir=written["merged_dir"], steps=self.config.max_steps, resumed_from=self.start,
                           final_loss=last_loss, metrics_file=str(self.out / METRICS),
                           main_process=accelerator.is_main_process, eval_scores=last_scores)


def run(config: TrainConfig, build_task) -> TrainResult:
    """Train ``build_task(config, accelerator)`` for ``config.max_steps`` optimizer steps."""
    trainer = Trainer(config, build_task)
    trainer.restore()
    return trainer.finish(*trainer.train())
