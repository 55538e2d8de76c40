"""Typed training configurations: one dataclass per stage, validated on construction.

A config comes from a JSON file plus ``--key value`` overrides. The keys below are
l2v's own; every other key is one of the trainers' own ``TrainingArguments`` (``report_to``,
``logging_steps``, ``push_to_hub``, ``deepspeed``, ...), passed through by its own name and parsed
by ``HfArgumentParser`` (see ``arguments.py``). Unknown keys are refused with the closest valid
key suggested; values are checked for type and range so a typo fails before a model is loaded. Relative paths written in a
config file are taken relative to that file (so a config and its data can move
together); paths given on the command line are relative to the current directory.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dtypes import DTYPE_NAMES as DTYPES
from ..pooling import POOLING_MODES

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
              "inverse_sqrt")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
REQUIRED_KEYS = ("base_model", "train_file", "output_dir")
# Keys whose relative values name files or folders.
PATH_KEYS = ("base_model", "train_file", "output_dir", "mntp_adapter", "eval_data_dir")
# Keys a resumed run may change without changing the result of the steps already taken.
RESUMABLE_CHANGES = {"max_steps", "save_steps", "save_total_limit", "merge_output", "resume", "progress_bar",
                     "output_dir", "gradcache_chunk_size", "eval_tasks", "eval_steps", "eval_data_dir",
                     "report_to", "logging_steps", "logging_dir", "push_to_hub", "hub_model_id", "hub_token",
                     "hub_strategy", "hub_private_repo", "run_name", "save_strategy", "dataloader_num_workers"}
# Keys that split the global batch over processes: a resumed run may change them (to run on
# another number of processes) as long as the global batch stays the same.
BATCH_LAYOUT = {"batch_size", "global_batch_size", "processes"}


class ConfigError(ValueError):
    """A training config is malformed; the message names the key and what is wrong."""


def setting(default: Any, help: str):
    """A config key: its default and its meaning (shown by ``l2v-train STAGE --help``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def setting_help(cls: type, name: str) -> str:
    """The meaning of key ``name``, from the class in ``cls``'s hierarchy that declares it with one."""
    for klass in cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get("help"):
            return declared.metadata["help"]
    return ""


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
    max_steps: int = setting(1000, "optimizer steps")
    batch_size: int = setting(32, "items per process in a micro-batch (the global batch is batch_size x processes)")
    global_batch_size: int | None = setting(
        None, "items per micro-batch over all processes; replaces batch_size (each process takes "
              "global_batch_size / processes), so a config trains alike on any number of processes")
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step")
    max_length: int = setting(512, "tokens per text")
    learning_rate: float = setting(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    lr_scheduler: str = setting("linear", f"learning-rate schedule: {', '.join(SCHEDULERS)}")
    warmup_steps: int = setting(0, "steps of linear warm-up")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 turns clipping off)")
    seed: int = setting(42, "seed of the data order, masks, dropout and LoRA init")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = setting(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = setting(
        LORA_TARGETS, "linear layers that get LoRA (comma list on the command line)")
    dtype: str = setting("auto", f"weights as loaded: {', '.join(DTYPES)} (auto: bfloat16 where the device has "
                                 "bf16 units, else float32)")
    bf16: bool | str = setting(False, "bf16 autocast (mixed precision): true, false, or auto (true where the device "
                                      "has bf16 units)")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    attn_implementation: str | None = setting(
        None, f"attention kernel: {', '.join(ATTENTION)} (null: transformers' default, sdpa)")
    save_steps: int = setting(200, "checkpoint every N steps (0: only at the end)")
    save_total_limit: int = setting(2, "checkpoints kept (oldest removed first)")
    resume: bool = setting(True, "continue from the latest checkpoint in output_dir when there is one")
    merge_output: bool = setting(False, "also write the adapter merged into the base as a full model")
    text_field: str = setting("text", "key of the text in .jsonl data")
    progress_bar: bool = setting(True, "show a progress bar")
    eval_tasks: str | None = setting(
        None, "evaluate the encoder being trained on these tasks (what l2v-eval --tasks takes: a preset such as "
              "l2v-mini, a task type, or task names); scores go to metrics.csv")
    eval_steps: int = setting(0, "evaluate every N steps, and at the end (0: only at the end); needs eval_tasks")
    eval_data_dir: str | None = setting(None, "folder of local task data for eval_tasks, as l2v-eval --data-dir")

    stage = "base"

    # ----------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _check_type(f.name, getattr(self, f.name), _field_types(type(self))[f.name]))
        self.validate()

    def validate(self) -> None:
        for key in REQUIRED_KEYS:
            if not getattr(self, key):
                raise ConfigError(f"`{key}` is required for {self.stage} training")
        _positive(self, "max_steps", "batch_size", "gradient_accumulation_steps", "max_length", "lora_r", "lora_alpha")
        if self.global_batch_size is not None:
            _positive(self, "global_batch_size")
        _non_negative(self, "weight_decay", "warmup_steps", "max_grad_norm", "save_steps", "save_total_limit", "seed")
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be > 0, got {self.learning_rate}")
        _probability(self, "lora_dropout")
        _choice(self, "lr_scheduler", SCHEDULERS)
        _choice(self, "dtype", DTYPES)
        if isinstance(self.bf16, str) and self.bf16 != "auto":
            raise ConfigError(f"`bf16` must be true, false or \"auto\", got {self.bf16!r}")
        if self.attn_implementation is not None:
            _choice(self, "attn_implementation", ATTENTION)
        if not self.lora_target_modules or not all(isinstance(m, str) and m for m in self.lora_target_modules):
            raise ConfigError("`lora_target_modules` must be a non-empty list of module names such as 'q_proj'")
        _check_output_dir(self.output_dir)
        self._validate_evaluation()

    def _validate_evaluation(self) -> None:
        _non_negative(self, "eval_steps")
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

    def process_batch_size(self, num_processes: int) -> int:
        """Items per process in a micro-batch: ``batch_size``, or ``global_batch_size`` split evenly."""
        if self.global_batch_size is None:
            return self.batch_size
        if self.global_batch_size % num_processes:
            raise ConfigError(f"`global_batch_size` {self.global_batch_size} does not split evenly over {num_processes} "
                              f"processes; use a multiple of {num_processes}")
        return self.global_batch_size // num_processes

    def global_batch(self, num_processes: int) -> int:
        """Items per micro-batch over all processes (what the data order depends on)."""
        return self.process_batch_size(num_processes) * num_processes

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass
class MNTPConfig(TrainConfig):
    """Masked next-token prediction: masked token i is predicted from position i-1."""

    mask_probability: float = setting(0.2, "fraction of tokens masked (80% mask token, 10% random, 10% unchanged)")
    mask_token: str = setting(
        "_", "used only when the tokenizer has no mask token: a vocabulary token, or eos / pad / unk for the "
             "tokenizer's own (the reference uses '_' for Llama/Mistral)")
    line_by_line: bool = setting(
        False, "false: concatenate all texts and cut blocks of max_length tokens (the reference's default); "
               "true: one text per sequence, padded per batch")

    stage = "mntp"

    def validate(self) -> None:
        super().validate()
        if not 0 < self.mask_probability < 1:
            raise ConfigError(f"`mask_probability` must be in (0, 1), got {self.mask_probability}")
        if not self.mask_token:
            raise ConfigError("`mask_token` must be a non-empty token string (or 'eos', 'pad', 'unk')")


@dataclass
class ContrastiveConfig(TrainConfig):
    """Settings shared by the two contrastive stages (both train an encoder with an InfoNCE loss,
    sentence-transformers' MultipleNegativesRankingLoss)."""

    mntp_adapter: str | None = setting(
        None, "peft adapter (an MNTP run's adapter/) merged into base_model before the new LoRA")
    pooling_mode: str = setting("mean", f"pooling of the token states: {', '.join(POOLING_MODES)}")
    temperature: float = setting(0.05, "InfoNCE temperature: cosine similarities are divided by it")
    attention_dropout: float = setting(0.0, "dropout on the attention weights")
    merge_output: bool = True
    gradcache_chunk_size: int | None = setting(
        None, "GradCache (CachedMultipleNegativesRankingLoss): texts per forward pass; the loss still contrasts the "
              "whole batch with the same gradients, activation memory is that of one chunk (null: one pass)")
    loss: str = setting(
        "MultipleNegativesRankingLoss", "a sentence-transformers loss by class name; a wrapping loss such as "
                                        "MatryoshkaLoss wraps the contrastive loss")
    loss_args: dict[str, Any] = setting({}, "keyword arguments of `loss`, e.g. {\"matryoshka_dims\": [576, 256, 64]}")

    stage = "contrastive"

    def validate(self) -> None:
        super().validate()
        _choice(self, "pooling_mode", POOLING_MODES)
        if self.gradcache_chunk_size is not None:
            _positive(self, "gradcache_chunk_size")
        if not self.temperature > 0:
            raise ConfigError(f"`temperature` must be > 0, got {self.temperature}")
        _probability(self, "attention_dropout")


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


# --------------------------------------------------------------------- building
def build_config(stage: str, values: dict[str, Any]) -> TrainConfig:
    """Validate ``values`` for ``stage`` and return the typed config.

    Keys that are not l2v settings but are the stage's trainer's own ``TrainingArguments``
    are kept, checked, in ``config.trainer_args``; anything else is refused with the closest valid key.
    """
    from .arguments import check_trainer_args, trainer_arg_names

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
    try:
        config = cls(**{k: v for k, v in values.items() if k in known})
    except TypeError as err:  # only reachable through programmatic misuse; keys are checked above
        raise ConfigError(str(err)) from err
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
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object of settings, got {type(values).__name__}")
        values = _resolve_paths(values, os.path.dirname(os.path.abspath(path)))
    overrides = dict(overrides or {})
    for key in PATH_KEYS:
        value = overrides.get(key)
        # Existing paths become absolute, so a resumed run compares equal from any folder.
        if isinstance(value, str) and value and key != "output_dir" and os.path.exists(value):
            overrides[key] = os.path.abspath(value)
    values.update(overrides)
    return build_config(stage, _resolve_named_data(values, data_roots or {}))


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
    for key in PATH_KEYS:
        named = _named_data(out.get(key))
        if named is None or key in ("base_model", "mntp_adapter"):
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
        if not isinstance(value, str) or not value or os.path.isabs(value) or _named_data(value):
            continue
        candidate = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))
        # A model may also be a hub id ("org/name"): keep it when nothing exists at the relative path.
        if key in ("base_model", "mntp_adapter") and not os.path.exists(candidate):
            continue
        out[key] = candidate
    return out


def parse_override_value(text: str) -> Any:
    """Command-line values are JSON when they parse as JSON (numbers, true/false, null, lists), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --------------------------------------------------------------------- checks
@typing.no_type_check
def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"`{name}` must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"`{name}` must be an integer, got {value!r}")
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"`{name}` must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"`{name}` must be a finite number, got {value}")
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"`{name}` must be a string, got {value!r}")
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


def _positive(cfg, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"`{key}` must be > 0, got {getattr(cfg, key)}")


def _non_negative(cfg, *keys: str) -> None:
    for key in keys:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"`{key}` must be >= 0, got {getattr(cfg, key)}")


def _probability(cfg, key: str) -> None:
    if not 0 <= getattr(cfg, key) < 1:
        raise ConfigError(f"`{key}` must be in [0, 1), got {getattr(cfg, key)}")


def _choice(cfg, key: str, choices) -> None:
    if getattr(cfg, key) not in choices:
        close = difflib.get_close_matches(str(getattr(cfg, key)), list(choices), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"`{key}` must be one of {', '.join(choices)}; got {getattr(cfg, key)!r}{hint}")
