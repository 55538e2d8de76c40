"""Checkpoints that let a killed run continue exactly where it stopped.

A checkpoint holds the adapter (peft format, so it is also usable on its own),
the optimizer and LR-scheduler states, every process's RNG states and the step
counter. It is filled under a temporary name and renamed into place
(``l2v_core.files``), so a run killed while saving leaves the previous checkpoint
intact and never a half one.

Every file is read as data only: tensors and plain values (``torch.load`` with
``weights_only=True``, safetensors, JSON). The RNG states are stored in such forms,
so nothing in a checkpoint is ever unpickled into arbitrary objects; a file that
would need that is refused, naming it. A checkpoint with an unreadable file (a
truncated copy, a full disk) is set aside and the run resumes from the one before.
"""
from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import publish_dir, staging_dir, write_json

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
ADAPTER_WEIGHTS = Path("adapter") / "adapter_model.safetensors"
UNREADABLE_SUFFIX = ".unreadable"
_NAME = re.compile(r"^step-(\d+)$")
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """No checkpoint of a run can be resumed from; the message names the files and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds pickled objects other than tensors and plain values; it is never loaded."""


class _Unreadable(Exception):
    """One checkpoint file is missing, truncated or malformed (the message names it)."""


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


# --------------------------------------------------------------------- RNG states as plain data
def rng_state() -> dict:
    """Every RNG's state as tensors, ints, floats, strings and lists (loadable with ``weights_only``)."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state((nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_rng(state, file: Path) -> dict:
    try:
        py, nps = state["python"], state["numpy"]
        ok = (isinstance(py["state"], list) and len(py["state"]) == 625 and isinstance(nps["keys"], torch.Tensor)
              and nps["keys"].numel() == 624 and isinstance(state["torch"], torch.Tensor))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise _Unreadable(f"{file} is not an RNG state written by l2v")
    return state


# --------------------------------------------------------------------- writing
def save_checkpoint(output_dir: str, step: int, accelerator, peft_model, optimizer, scheduler,
                    trainer_state: dict, keep: int) -> Path:
    """Write checkpoint ``step`` (all processes call this) and drop all but the newest ``keep``."""
    final = checkpoint_root(output_dir) / f"step-{step:06d}"
    staging = staging_dir(final)
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), staging / f"rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        peft_model.save_pretrained(staging / "adapter", save_embedding_layers=False)
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        write_json(staging / STATE_FILE, {"step": step, **trainer_state}, indent=2)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_dir(staging, final)
        for _, old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# --------------------------------------------------------------------- reading
def _load_data(file: Path):
    """``torch.load`` restricted to tensors and plain values."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _Unreadable(f"{file} is missing") from None
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)|Unsupported operand \d+", str(err))
        what = f"pickled objects ({found.group(1) or found.group(0)})" if found else "pickled objects"
        raise UnsafeCheckpointError(
            f"Refusing to load {file}: it holds {what}, not only tensors and plain values as l2v checkpoints do, "
            f"and loading it could run code. Delete {file.parent} to resume from the checkpoint before it, "
            "or train into another output_dir"
        ) from None
    except Exception as err:  # truncated or garbled zip archives raise RuntimeError, EOFError, KeyError ...
        first_line = str(err).splitlines()[0] if str(err) else "empty"
        raise _Unreadable(f"{file} is unreadable ({type(err).__name__}: {first_line})") from None


@dataclass
class CheckpointContents:
    """Everything one process needs from a checkpoint, read and checked before anything is applied."""

    path: Path
    state: dict
    adapter: dict
    optimizer: dict
    scheduler: dict
    rng: dict | None


def read_checkpoint(path: Path, process_index: int, device="cpu") -> CheckpointContents:
    """Read and check every file of checkpoint ``path``; raise ``_Unreadable`` / :class:`UnsafeCheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
    except (OSError, ValueError) as err:
        raise _Unreadable(f"{state_file} is unreadable ({err})") from None
    weights_file = path / ADAPTER_WEIGHTS
    try:
        adapter = load_file(str(weights_file), device=str(device))
    except FileNotFoundError:
        raise _Unreadable(f"{weights_file} is missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise _Unreadable(f"{weights_file} is unreadable ({err})") from None
    optimizer, scheduler = _load_data(path / "optimizer.pt"), _load_data(path / "scheduler.pt")
    for file, value in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        if not isinstance(value, dict):
            raise _Unreadable(f"{path / file} holds a {type(value).__name__}, not a state dict")
    rng_file = path / f"rng_{process_index}.pt"
    rng = _check_rng(_load_data(rng_file), rng_file) if rng_file.is_file() else None
    return CheckpointContents(path, state, adapter, optimizer, scheduler, rng)


def _apply(contents: CheckpointContents, peft_model, optimizer, scheduler) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(peft_model, contents.adapter)
    missing_lora = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing_lora:
        raise CheckpointError(f"Checkpoint {contents.path} lacks adapter weights for {missing_lora[:3]} ...; "
                              "was it written with different LoRA settings?")
    optimizer.load_state_dict(contents.optimizer)
    scheduler.load_state_dict(contents.scheduler)
    if contents.rng is not None:
        set_rng_state(contents.rng)


# Outcome codes every process shares, so all take the same checkpoint (or all stop).
_OK, _UNREADABLE, _UNSAFE = 0, 1, 2


def gather_codes(accelerator, code: int) -> list[int]:
    """Every process's ``code``, in rank order (so all processes can take the same decision)."""
    if accelerator.num_processes == 1:
        return [code]
    return accelerator.gather(torch.tensor([code], device=accelerator.device)).tolist()


def _set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint so it is neither resumed from nor counted by ``save_total_limit``."""
    target = path.with_name(path.name + UNREADABLE_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{UNREADABLE_SUFFIX}{n}")
    path.rename(target)
    return target


def load_checkpoint(output_dir: str, accelerator, peft_model, optimizer, scheduler) -> dict | None:
    """Restore weights, optimizer, scheduler and this process's RNG from the newest readable
    checkpoint of ``output_dir``; return its trainer state, or None when there is no checkpoint.

    Unreadable checkpoints are set aside (renamed ``step-N.unreadable``) with a warning naming the
    file; when none is readable the run stops and the message names them all. A file that would
    need unpickling of arbitrary objects stops the run at once.
    """
    candidates = [path for _, path in reversed(list_checkpoints(output_dir))]
    if not candidates:
        return None
    problems: list[str] = []
    for path in candidates:
        contents, problem, code = None, "", _OK
        try:
            contents = read_checkpoint(path, accelerator.process_index, accelerator.device)
        except UnsafeCheckpointError as err:
            problem, code = str(err), _UNSAFE
        except _Unreadable as err:
            problem, code = str(err), _UNREADABLE
        codes = gather_codes(accelerator, code)
        if _UNSAFE in codes:
            raise UnsafeCheckpointError(problem or f"Refusing checkpoint {path}: process {codes.index(_UNSAFE)} "
                                                   "found a file in it that holds pickled objects")
        if any(codes):
            problems.append(problem or f"{path} has a file that process {codes.index(_UNREADABLE)} cannot read")
            continue
        if problems and accelerator.is_main_process:
            for bad in candidates[:candidates.index(path)]:
                moved = _set_aside(bad)
                logger.warning("Checkpoint %s cannot be resumed from (%s); moved it to %s and resuming from %s",
                               bad, problems[candidates.index(bad)], moved.name, path)
        accelerator.wait_for_everyone()
        _apply(contents, peft_model, optimizer, scheduler)
        _warn_other_process_count(contents, accelerator)
        return contents.state
    raise CheckpointError(
        f"Cannot resume the run in {output_dir}: {'; '.join(problems)}, and there is no earlier complete checkpoint. "
        f"Delete {checkpoint_root(output_dir)} to start the run afresh, or train into another output_dir"
    )


def _warn_other_process_count(contents: CheckpointContents, accelerator) -> None:
    saved = contents.state.get("processes")
    if saved is not None and saved != accelerator.num_processes and accelerator.is_main_process:
        # Weights, optimizer and data order carry over; random draws (dropout) are per process.
        logger.warning("Checkpoint %s was written by %d process(es), resuming on %d: the data order is kept, "
                       "random draws such as dropout masks differ from an uninterrupted run",
                       contents.path, saved, accelerator.num_processes)
