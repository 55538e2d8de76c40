"""The training loop shared by every stage.

A stage supplies a :class:`Task` (the trainable module, its data order, how to
build a batch and compute the loss, how to save the result); this module owns
everything else: accelerate setup, optimizer and LR schedule, gradient
accumulation and clipping, checkpoints and resume, the progress bar and the
metrics CSV.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..files import write_json
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import BATCH_LAYOUT, RESUMABLE_CHANGES, ConfigError, TrainConfig
from .data import BatchSchedule

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


class MetricsLog:
    """``metrics.csv``: one row per optimizer step (step, loss, lr, tokens, seconds).

    ``tokens`` and ``seconds`` are those of that step (all processes), so tokens/s of a
    step is one division. On resume, rows after the checkpoint's step are dropped
    (the killed run may have logged steps that are now trained again).
    """

    def __init__(self, path: Path, keep_until: int | None, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    def add(self, step: int, loss: float, lr: float, tokens: int, seconds: float) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{loss:.6g}", f"{lr:.6g}", tokens, f"{seconds:.4f}"])


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


def run(config: TrainConfig, build_task) -> TrainResult:
    """Train ``build_task(config, accelerator)`` for ``config.max_steps`` optimizer steps."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    accelerator = make_accelerator(config)
    out = Path(config.output_dir)
    resume_from = _check_resume(config, out, accelerator.num_processes)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_config(config, out, accelerator.num_processes)

    set_seed(config.seed)
    task: Task = build_task(config, accelerator)
    params = [p for p in task.module.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("No trainable parameters: the LoRA target modules matched nothing")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    # The scheduler steps once per optimizer step; it is not handed to accelerate, which would
    # step it once per process.
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=config.max_steps)
    module, optimizer = accelerator.prepare(task.module, optimizer)

    start, elapsed = 0, 0.0
    if resume_from is not None:
        state = load_checkpoint(resume_from, accelerator, task.peft_model, optimizer, scheduler)
        start, elapsed = int(state["step"]), float(state.get("seconds", 0.0))
        logger.info("Resuming %s training from %s (step %d)", config.stage, resume_from, start)
    metrics = MetricsLog(out / METRICS, keep_until=start if resume_from is not None else None,
                         enabled=accelerator.is_main_process)

    accum = config.gradient_accumulation_steps
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = tqdm(total=config.max_steps, initial=start, desc=f"{config.stage}", unit="step",
               disable=not (accelerator.is_main_process and config.progress_bar), dynamic_ncols=True)
    module.train()
    last_loss = None
    for step in range(start, config.max_steps):
        began = time.perf_counter()
        step_loss = torch.zeros((), device=accelerator.device)
        step_tokens = 0
        for micro in range(accum):
            index = step * accum + micro
            batch = task.batch(task.schedule.local_batch(index, rank, world), index)
            with accelerator.accumulate(module), accelerator.autocast():
                loss, tokens = task.backward(module, batch, accelerator)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach().float() / accum
            step_tokens += tokens
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        loss_value = accelerator.reduce(step_loss, reduction="mean").item()
        tokens_all = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), reduction="sum"))
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{config.stage} loss became {loss_value} at step {step + 1}; "
                                     "lower learning_rate or use float32 / bf16 instead of float16")
        seconds = time.perf_counter() - began
        elapsed += seconds
        last_loss = loss_value
        metrics.add(step + 1, loss_value, lr, tokens_all, seconds)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        done = step + 1
        if done == config.max_steps or (config.save_steps and done % config.save_steps == 0):
            save_checkpoint(str(out), done, accelerator, task.peft_model, optimizer,
                            scheduler, {"seconds": elapsed, "stage": config.stage, "processes": world},
                            keep=config.save_total_limit)
    bar.close()

    accelerator.wait_for_everyone()
    written: dict[str, str | None] = {"adapter_dir": str(out / "adapter"), "merged_dir": None}
    if accelerator.is_main_process:
        written = task.save(str(out))
    accelerator.wait_for_everyone()
    return TrainResult(stage=config.stage, output_dir=str(out), adapter_dir=written["adapter_dir"] or "",
                       merged_dir=written["merged_dir"], steps=config.max_steps, resumed_from=start,
                       final_loss=last_loss, metrics_file=str(out / METRICS),
                       main_process=accelerator.is_main_process)
