"""Checkpoints that let a killed run continue exactly where it stopped.

A checkpoint holds the adapter (peft format, so it is also usable on its own),
the optimizer and LR-scheduler states, every process's RNG states and the step
counter. It is written to a temporary folder and renamed into place, so a run
killed while saving leaves the previous checkpoint intact and never a half one.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d+)$")
logger = logging.getLogger(__name__)


def checkpoint_root(output_dir: str) -> Path:
    return Path(output_dir) / CHECKPOINTS


def list_checkpoints(output_dir: str) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a state file), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str, step: int, accelerator, peft_model, optimizer, scheduler,
                    trainer_state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` (all processes call this) and drop all but the newest ``keep``."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        peft_model.save_pretrained(tmp / "adapter", save_embedding_layers=False)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        with open(tmp / STATE_FILE, "w") as f:
            json.dump({"step": step, **trainer_state}, f, indent=2)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator, peft_model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and this process's RNG; return the trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_file = path / "adapter" / "adapter_model.safetensors"
    if not adapter_file.is_file():
        raise FileNotFoundError(f"Checkpoint {path} has no adapter weights ({adapter_file.name})")
    weights = load_file(str(adapter_file), device=str(accelerator.device))
    result = set_peft_model_state_dict(peft_model, weights)
    missing_lora = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing_lora:
        raise RuntimeError(f"Checkpoint {path} lacks adapter weights for {missing_lora[:3]} ...; "
                           "was it written with different LoRA settings?")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    with open(path / STATE_FILE) as f:
        state = json.load(f)
    rng_file = path / f"rng_{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    saved = state.get("processes")
    if saved is not None and saved != accelerator.num_processes and accelerator.is_main_process:
        # Weights, optimizer and data order carry over; random draws (dropout) are per process.
        logger.warning("Checkpoint %s was written by %d process(es), resuming on %d: the data order is kept, "
                       "random draws such as dropout masks differ from an uninterrupted run",
                       path, saved, accelerator.num_processes)
    return state
