"""Typed training configurations: one dataclass per stage, checked on construction.

A config comes from a JSON file plus ``--key value`` overrides (read by ``arguments.load_config``). The keys
below are l2v's own; every other key is one of the trainers' own ``TrainingArguments`` (``report_to``,
``logging_steps``, ``push_to_hub``, ``deepspeed``, ...), passed through by its own name and checked by
``HfArgumentParser`` (see ``arguments.py``). Each key declares its type and the values it takes, so a typo
fails with a one-line error naming the key before a model is loaded. The dataclasses themselves check
nothing, and the trainers' arguments only a few of these values, under their own names and without a
suggestion (a negative learning rate or weight decay passes them), hence the checks here.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dtypes import DTYPE_NAMES as DTYPES
from ..packing import ATTENTION_BACKENDS as ATTENTION
from ..pooling import POOLING_MODES

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
              "inverse_sqrt")
REQUIRED_KEYS = ("base_model", "train_file", "output_dir")
SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
# The ranges a key's ``check`` may name: what the error says, and the test.
RANGES = {">0": ("> 0", lambda v: v > 0), ">=0": (">= 0", lambda v: v >= 0),
          "[0,1)": ("in [0, 1)", lambda v: 0 <= v < 1), "(0,1)": ("in (0, 1)", lambda v: 0 < v < 1)}


class ConfigError(ValueError):
    """A training config is malformed; the message names the key and what is wrong."""


def setting(default: Any, help: str, check: str | tuple | None = None):
    """A config key: its default, its meaning (shown by ``l2v-train STAGE --help``) and the values it takes
    (a range of ``RANGES`` or a tuple of choices; None is always taken where the type allows it)."""
    metadata = {"help": help, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _declared(cls: type, name: str, what: str) -> Any:
    """``what`` (help, check) of key ``name``, from the class in ``cls``'s hierarchy that declares it (a subclass
    that only changes a default redeclares the field without it)."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get(what) is not None:
            return declared.metadata[what]
    return None


def setting_help(cls: type, name: str) -> str:
    """The meaning of key ``name``."""
    return _declared(cls, name, "help") or ""


def setting_default(declared: dataclasses.Field) -> Any:
    if declared.default_factory is not dataclasses.MISSING:
        return declared.default_factory()
    return declared.default


@dataclass
class TrainConfig:
    """Settings shared by every stage (defaults from the LLM2Vec paper where it gives one)."""

    base_model: str = setting(
        "", "HF model dir, Hugging Face Hub id, .gguf file, or 'bundled' (SmolLM2-135M GGUF)")
    train_file: str = setting("", ".txt (one text per line) or .jsonl, optionally .gz-compressed")
    output_dir: str = setting("", "folder for the adapter, checkpoints, metrics.csv; a rerun resumes from it")
    max_steps: int = setting(1000, "optimizer steps", ">0")
    batch_size: int = setting(32, "items per process in a micro-batch (the global batch is batch_size x processes)",
                              ">0")
    global_batch_size: int | None = setting(
        None, "items per micro-batch over all processes; replaces batch_size (each process takes "
              "global_batch_size / processes), so a config trains alike on any number of processes", ">0")
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step", ">0")
    max_length: int = setting(512, "tokens per text", ">0")
    learning_rate: float = setting(5e-5, "peak learning rate (AdamW)", ">0")
    weight_decay: float = setting(0.0, "AdamW weight decay", ">=0")
    lr_scheduler: str = setting("linear", f"learning-rate schedule: {', '.join(SCHEDULERS)}", SCHEDULERS)
    warmup_steps: int = setting(0, "steps of linear warm-up", ">=0")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 turns clipping off)", ">=0")
    seed: int = setting(42, "seed of the data order, masks, dropout and LoRA init", ">=0")
    lora_r: int = setting(16, "LoRA rank", ">0")
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / r)", ">0")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input", "[0,1)")
    lora_target_modules: list[str] = setting(
        LORA_TARGETS, "linear layers that get LoRA (comma list on the command line)")
    dtype: str = setting("auto", f"weights as loaded: {', '.join(DTYPES)} (auto: bfloat16 where the device has "
                                 "bf16 units, else float32)", DTYPES)
    bf16: bool | str = setting("auto", "bf16 autocast (mixed precision): true, false, or auto (true where the "
                                       "device has bf16 units)")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    attn_implementation: str | None = setting(
        None, f"attention kernel: {', '.join(ATTENTION)} (null: transformers' default, sdpa)", ATTENTION)
    save_steps: int = setting(200, "checkpoint every N steps (0: only at the end)", ">=0")
    save_total_limit: int = setting(2, "checkpoints kept (oldest removed first)", ">=0")
    resume: bool = setting(True, "continue from the latest checkpoint in output_dir when there is one")
    merge_output: bool = setting(False, "also write the adapter merged into the base as a full model")
    text_field: str = setting("text", "key of the text in .jsonl data")
    progress_bar: bool = setting(True, "show a progress bar")
    eval_tasks: str | None = setting(
        None, "evaluate the encoder being trained on these tasks (what l2v-eval --tasks takes: a preset such as "
              "l2v-mini, a task type, or task names); scores go to metrics.csv")
    eval_steps: int = setting(0, "evaluate every N steps, and at the end (0: only at the end); needs eval_tasks",
                              ">=0")
    eval_data_dir: str | None = setting(None, "folder of local task data for eval_tasks, as l2v-eval --data-dir")

    stage = "base"

    # ----------------------------------------------------------------- checks
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    def validate(self) -> None:
        for key in REQUIRED_KEYS:
            if not getattr(self, key):
                raise ConfigError(f"`{key}` is required for {self.stage} training")
        for f in dataclasses.fields(self):
            _check_value(f.name, getattr(self, f.name), _declared(type(self), f.name, "check"))
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ConfigError(f"`bf16` must be true, false or \"auto\", got {self.bf16!r}")
        if not self.lora_target_modules or not all(self.lora_target_modules):
            raise ConfigError("`lora_target_modules` must be a non-empty list of module names such as 'q_proj'")
        _check_output_dir(self.output_dir)
        if self.eval_tasks is not None and not self.eval_tasks.strip():
            raise ConfigError("`eval_tasks` is empty; give a preset such as 'l2v-mini', a task type or task names")
        if self.eval_steps and self.eval_tasks is None:
            raise ConfigError("`eval_steps` needs `eval_tasks` (which tasks to evaluate, e.g. 'l2v-mini')")
        if self.eval_data_dir is not None and not os.path.isdir(self.eval_data_dir):
            raise ConfigError(f"`eval_data_dir` {self.eval_data_dir!r} is not a folder")

    # The trainer's own TrainingArguments given by name (set by build_config, checked there).
    trainer_args: typing.ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), **self.trainer_args}

    def global_batch(self, num_processes: int) -> int:
        """Items per micro-batch over all processes (what the data order depends on): ``batch_size`` per process,
        or ``global_batch_size``, which must split evenly."""
        if self.global_batch_size is None:
            return self.batch_size * num_processes
        if self.global_batch_size % num_processes:
            raise ConfigError(f"`global_batch_size` {self.global_batch_size} does not split evenly over {num_processes} "
                              f"processes; use a multiple of {num_processes}")
        return self.global_batch_size

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class MNTPConfig(TrainConfig):
    """Masked next-token prediction: masked token i is predicted from position i-1."""

    mask_probability: float = setting(0.2, "fraction of tokens masked (80% mask token, 10% random, 10% unchanged)",
                                      "(0,1)")
    mask_token: str = setting(
        "_", "used only when the tokenizer has no mask token: a vocabulary token, or eos / pad / unk for the "
             "tokenizer's own (the reference uses '_' for Llama/Mistral)")
    line_by_line: bool = setting(
        False, "false: concatenate all texts and cut blocks of max_length tokens (the reference's default); "
               "true: one text per sequence, padded per batch")

    stage = "mntp"

    def validate(self) -> None:
        super().validate()
        if not self.mask_token:
            raise ConfigError("`mask_token` must be a non-empty token string (or 'eos', 'pad', 'unk')")


@dataclass
class ContrastiveConfig(TrainConfig):
    """Settings shared by the two contrastive stages (both train an encoder with an InfoNCE loss,
    sentence-transformers' MultipleNegativesRankingLoss)."""

    mntp_adapter: str | None = setting(
        None, "peft adapter (an MNTP run's adapter/) merged into base_model before the new LoRA")
    pooling_mode: str = setting("mean", f"pooling of the token states: {', '.join(POOLING_MODES)}", POOLING_MODES)
    temperature: float = setting(0.05, "InfoNCE temperature: cosine similarities are divided by it", ">0")
    attention_dropout: float = setting(0.0, "dropout on the attention weights", "[0,1)")
    merge_output: bool = True
    gradcache_chunk_size: int | None = setting(
        None, "GradCache (CachedMultipleNegativesRankingLoss): texts per forward pass; the loss still contrasts the "
              "whole batch with the same gradients, activation memory is that of one chunk (null: one pass)", ">0")
    loss: str = setting(
        "MultipleNegativesRankingLoss", "a sentence-transformers loss by class name; a wrapping loss such as "
                                        "MatryoshkaLoss wraps the contrastive loss")
    loss_args: dict[str, Any] = setting({}, "keyword arguments of `loss`, e.g. {\"matryoshka_dims\": [576, 256, 64]}")

    stage = "contrastive"


@dataclass
class SimCSEConfig(ContrastiveConfig):
    """Unsupervised SimCSE: each text twice, dropout the only augmentation (paper: dropout 0.3)."""

    batch_size: int = 128
    max_length: int = 128
    learning_rate: float = 3e-5
    attention_dropout: float = 0.3
    lora_dropout: float = 0.3

    stage = "simcse"


@dataclass
class SupervisedConfig(ContrastiveConfig):
    """Supervised contrastive training on query / positive / hard-negative triples."""

    batch_size: int = 64
    learning_rate: float = 2e-4
    warmup_steps: int = 300
    temperature: float = 0.02  # the reference's loss scale of 50
    instructions: dict[str, str] = setting({}, "{dataset name: instruction} for the queries of that dataset")
    default_instruction: str = setting("", "instruction for queries whose dataset has no entry in instructions")
    homogeneous_batches: bool = setting(
        True, "fill each batch from one dataset, as the reference does (in-batch negatives from another "
              "dataset are too easy to teach anything)")

    stage = "supervised"


STAGES: dict[str, type[TrainConfig]] = {"mntp": MNTPConfig, "simcse": SimCSEConfig, "supervised": SupervisedConfig}


def parse_override_value(text: str) -> Any:
    """Command-line values are JSON when they parse as JSON (numbers, true/false, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _check_type(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:  # `bool | str`: the first type that takes the value
            try:
                return _check_type(name, value, candidate)
            except ConfigError:
                pass
        return _check_type(name, value, inner[-1])
    if origin is list:
        if isinstance(value, str):  # "q_proj,v_proj" on a command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"`{name}` must be a list, got {value!r}")
        return [_check_type(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = parse_override_value(value)
        if not isinstance(value, dict):
            raise ConfigError(f"`{name}` must be a JSON object, got {value!r}")
        return {_check_type(f"{name} key", k, args[0]): _check_type(f"{name}[{k!r}]", v, args[1]) for k, v in value.items()}
    if hint is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if hint is float and type(value) is int:
        value = float(value)
    if hint in SCALARS and type(value) is not hint:  # exact types: JSON's true is no integer, 1.5 no integer
        raise ConfigError(f"`{name}` must be {SCALARS[hint]}, got {value!r}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"`{name}` must be a finite number, got {value}")
    return value


def _check_output_dir(output_dir: str) -> None:
    """``output_dir`` must be a folder or creatable as one: no existing file on its way."""
    path = Path(output_dir).expanduser()
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is an existing file" if part == path else f"lies under {str(part)!r}, an existing file"
                raise ConfigError(f"`output_dir` {output_dir!r} {where}; give a folder path")
            return


def _check_value(name: str, value: Any, check: str | tuple | None) -> None:
    if check is None or value is None:
        return
    if isinstance(check, tuple):
        if value not in check:
            close = difflib.get_close_matches(str(value), list(check), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"`{name}` must be one of {', '.join(check)}; got {value!r}{hint}")
        return
    text, holds = RANGES[check]
    if not holds(value):
        raise ConfigError(f"`{name}` must be {text}, got {value}")
