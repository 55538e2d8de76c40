"""Building a stage's config, and the trainers' own ``TrainingArguments``: l2v's settings mapped onto them,
every other argument passed through by its own name (``report_to``, ``logging_steps``, ``push_to_hub``,
``deepspeed``, ``fsdp``, ...).

MNTP runs on transformers' ``Trainer`` (``TrainingArguments``); the contrastive stages on
sentence-transformers' trainer (``SentenceTransformerTrainingArguments``, a subclass). Relative paths written
in a config file are taken relative to that file (so a config and its data can move together); paths given
on the command line are relative to the current directory.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import typing
from collections.abc import Mapping
from typing import Any

import torch

from ..dtypes import bf16_pays, default_device
from ..files import read_json_object
from .config import STAGES, ConfigError, TrainConfig, _check_type

# Keys whose relative values name files or folders.
PATH_KEYS = ("base_model", "train_file", "output_dir", "mntp_adapter", "eval_data_dir")

# TrainingArguments that an l2v setting decides: giving them by their trainer name is refused,
# naming the l2v key (two names for one thing would be two truths).
OWNED = {"per_device_train_batch_size": "batch_size or global_batch_size", "lr_scheduler_type": "lr_scheduler",
         "disable_tqdm": "progress_bar", "eval_strategy": "eval_steps", "resume_from_checkpoint": "resume",
         "gradient_checkpointing": "gradient_checkpointing", "prompts": "instructions",
         "multi_dataset_batch_sampler": "homogeneous_batches"}


SIMPLE = (int, float, bool, str, type(None))


def arguments_class(stage: str) -> type:
    if stage == "mntp":
        from transformers import TrainingArguments

        return TrainingArguments
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments


@functools.cache
def trainer_arg_names(stage: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(arguments_class(stage)) if f.init and f.name not in OWNED)


def check_trainer_args(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """Check each passed-through argument's type (simple types) and let the arguments class vet its value,
    one key at a time so an error names its key."""
    from transformers import HfArgumentParser

    cls = arguments_class(stage)
    hints = typing.get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        hint = hints.get(key)
        if all(a in SIMPLE for a in typing.get_args(hint) or (hint,)):  # numbers, flags, strings: check here
            value = _check_type(key, value, hint)
        if key == "report_to":
            _check_report_to(value)
        try:
            HfArgumentParser(cls).parse_dict({"output_dir": "unused", key: value})
        except Exception as err:  # the arguments class raises what it likes (ValueError, ImportError, ...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"`{key}`: {first}") from None
        checked[key] = value
    return checked


def _check_report_to(value: Any) -> None:
    """The trainers accept any name here and fail at train time; a misspelt logger fails now, naming the key."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    known = [*INTEGRATION_TO_CALLBACK, "all", "none"]
    for name in [value] if isinstance(value, str) else value or []:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            raise ConfigError(f"`report_to`: unknown logger {name!r}"
                              + (f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"))


def use_bf16(config: TrainConfig) -> bool:
    return bf16_pays(default_device()) if config.bf16 == "auto" else bool(config.bf16)


def training_arguments(config: TrainConfig, stage: str, num_processes: int, **stage_args: Any):
    """The stage's TrainingArguments: l2v's settings under their trainer names, then the pass-through ones.

    Each process takes ``global_batch_size / processes`` items of one global batch (accelerate's
    ``split_batches``), so the data order and the gradients do not depend on the number of processes.
    """
    from transformers import HfArgumentParser

    global_batch = config.global_batch(num_processes)
    evaluating = stage_args.pop("evaluating", False)  # an evaluator was given
    values = dict(
        output_dir=config.output_dir, max_steps=config.max_steps, per_device_train_batch_size=global_batch,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        weight_decay=config.weight_decay, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm, seed=config.seed, data_seed=config.seed, bf16=use_bf16(config),
        save_strategy="steps", save_steps=config.save_steps or config.max_steps,
        save_total_limit=config.save_total_limit, disable_tqdm=not config.progress_bar, logging_steps=1,
        report_to="none", dataloader_drop_last=True, remove_unused_columns=False,
        accelerator_config={"split_batches": True},
        eval_strategy="steps" if evaluating else "no",
        eval_steps=(config.eval_steps or config.max_steps) if evaluating else None,
    )
    if not torch.cuda.is_available():
        # The trainers take bf16 autocast on a CPU, and start gloo for several CPU processes, only when told.
        values["use_cpu"] = True
    values.update(stage_args)
    values.update(config.trainer_args)
    (args,) = HfArgumentParser(arguments_class(stage)).parse_dict(values)
    return args


# --------------------------------------------------------------------- building
def build_config(stage: str, values: dict[str, Any]) -> TrainConfig:
    """Validate ``values`` for ``stage`` and return the typed config.

    Keys that are not l2v settings but are the stage's trainer's own ``TrainingArguments``
    are kept, checked, in ``config.trainer_args``; anything else is refused with the closest valid key.
    """
    if stage not in STAGES:
        raise ConfigError(f"Unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")
    cls = STAGES[stage]
    known = cls.keys()
    passthrough = {k: v for k, v in values.items() if k not in known}
    for key in passthrough:
        if key not in trainer_arg_names(stage):
            valid = [*known, *trainer_arg_names(stage)]
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"Unknown key {key!r} for {stage} training{hint} (l2v keys: `l2v-train {stage} --help`; "
                              "other keys are the trainer's TrainingArguments)")
    config = cls(**{k: v for k, v in values.items() if k in known})
    config.trainer_args = check_trainer_args(stage, passthrough)
    return config


def load_config(stage: str, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                data_roots: Mapping[str, str | os.PathLike] | None = None) -> TrainConfig:
    """Read a JSON config (optional), apply ``overrides``, validate.

    Relative paths in the file resolve against the file's folder; relative paths in
    ``overrides`` against the current directory. A path written ``NAME:relative/path`` names a file
    under ``data_roots[NAME]`` (``l2v-train`` passes the bundled suites' folders, so a recipe names
    ``l2v-real:train/pairs.jsonl.gz`` without knowing where the suite is installed).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"Config file not found: {path!r}")
        values = read_json_object(path, ConfigError, "a JSON object of settings")
        values = _resolve_paths(values, os.path.dirname(os.path.abspath(path)))
    overrides = dict(overrides or {})
    for key in PATH_KEYS:
        value = overrides.get(key)
        # Existing paths become absolute, so a resumed run compares equal from any folder.
        if isinstance(value, str) and value and key != "output_dir" and os.path.exists(value):
            overrides[key] = os.path.abspath(value)
    values.update(overrides)
    return build_config(stage, _resolve_named_data(values, data_roots or {}))


NAMED_DATA_KEYS = ("train_file", "eval_data_dir")  # data, which a recipe may name by suite; models and outputs not


def _named_data(value: Any) -> tuple[str, str] | None:
    """``("l2v-real", "train/pairs.jsonl.gz")`` for ``"l2v-real:train/pairs.jsonl.gz"``; None for a plain path
    (a one-letter name is a Windows drive, a name holding a slash is a path)."""
    if not isinstance(value, str) or ":" not in value:
        return None
    name, rest = value.split(":", 1)
    if len(name) < 2 or "/" in name or "\\" in name or not rest or rest.startswith("//"):
        return None
    return name, rest


def _resolve_named_data(values: dict[str, Any], data_roots: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    out = dict(values)
    for key in NAMED_DATA_KEYS:
        named = _named_data(out.get(key))
        if named is None:
            continue
        name, rest = named
        if name not in data_roots:
            known = ", ".join(sorted(data_roots)) or "none given"
            raise ConfigError(f"`{key}` {out[key]!r} names the data folder {name!r}, which is not known here "
                              f"(known: {known}; l2v-train knows the bundled suites' folders)")
        out[key] = os.path.join(os.fspath(data_roots[name]), rest)
    return out


def _resolve_paths(values: dict[str, Any], folder: str) -> dict[str, Any]:
    out = dict(values)
    for key in PATH_KEYS:
        value = out.get(key)
        if (not isinstance(value, str) or not value or os.path.isabs(value)
                or (key in NAMED_DATA_KEYS and _named_data(value))):
            continue
        candidate = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
        # A model may also be a hub id ("org/name"): keep it when nothing exists at the relative path.
        if key in ("base_model", "mntp_adapter") and not os.path.exists(candidate):
            continue
        out[key] = candidate
    return out
