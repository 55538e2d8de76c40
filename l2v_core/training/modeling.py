"""Model plumbing shared by the stages: LoRA, dropout, GGUF clean-up, writing adapters."""
from __future__ import annotations

import os

import torch

from .. import loading
from ..bidirectional import make_bidirectional
from ..dtypes import resolve_dtype
from ..encoder import CONFIG_NAME
from ..files import atomic_directory, write_json
from ..st_model import write_sentence_transformers_files
from .config import ConfigError, TrainConfig


def model_kwargs(config: TrainConfig) -> dict:
    # l2v's "auto" (bf16 where the device has bf16 units), not transformers' (the checkpoint's own dtype).
    kwargs = {"dtype": resolve_dtype(config.dtype)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    return kwargs


def trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A GGUF-loaded model carries a ``quantization_config`` that makes peft and
    ``save_pretrained`` treat it as quantized although its weights are dequantized
    floats; train on a plain copy instead (and restore bidirectional attention,
    which lives on the module instances)."""
    plain = loading.saveable(model)
    if plain is not model:
        make_bidirectional(plain)
    return plain


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant: frozen inputs need no requires_grad hack."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def set_attention_dropout(model: torch.nn.Module, p: float) -> int:
    """Set attention dropout in the config and on every attention module (they read it per call)."""
    count = 0
    for module in model.modules():
        if hasattr(module, "attention_dropout") and isinstance(module.attention_dropout, (int, float)):
            module.attention_dropout = p
            count += 1
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "attention_dropout"):
            config.attention_dropout = p
    return count


def add_lora(model: torch.nn.Module, config: TrainConfig):
    """Wrap ``model`` (a headless decoder) in a trainable peft LoRA model."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_target_modules), bias="none", task_type=None)
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"lora_target_modules {config.lora_target_modules} do not fit {type(model).__name__}: {err}. "
                          f"Its linear layers are named: {', '.join(names)}") from err


def saved_prompts(prompts, config: TrainConfig) -> dict[str, str]:
    """The sentence-transformers prompts a trained encoder is saved with: ``prompts`` (a dict, or a function
    giving one, called only here: on the main process, when saving) with the training instructions over them
    (:func:`training_prompts`)."""
    given = prompts() if callable(prompts) else prompts
    return {**(given or {}), **training_prompts(config)}


def save_adapter(encoder, adapter_dir: str, config: TrainConfig, prompts: dict[str, str],
                 scores: dict[str, float] | None = None) -> str:
    """Write the encoder's adapter (peft format, keys of the headless model), the tokenizer,
    ``llm2vec_config.json`` and the sentence-transformers files, so ``LLM2Vec.from_pretrained(adapter_dir)``
    and ``load_sentence_transformer(adapter_dir)`` rebuild base (+ MNTP) + this adapter; then l2v's model
    card. The base (``mntp_adapter``, else ``base_model``) is recorded portably (``bundled``, a Hub id, else
    the absolute path), so it is found on any machine. ``prompts`` / ``scores``: see :func:`save_merged`."""
    base = getattr(config, "mntp_adapter", None) or config.base_model
    for cfg in encoder.model.peft_config.values():
        cfg.base_model_name_or_path = loading.portable_reference(base)
    with atomic_directory(adapter_dir) as tmp:
        # Embeddings are never trained here; "auto" would look for a config.json at the base reference.
        encoder.model.save_pretrained(tmp, save_embedding_layers=False)
        encoder.tokenizer.save_pretrained(tmp)
        write_json(tmp / CONFIG_NAME, encoder.encoder_config())
        write_sentence_transformers_files(tmp, prompts=prompts)
    _write_card(adapter_dir, encoder, config, prompts, scores, merged=False)
    return str(adapter_dir)


def save_merged(encoder, output_dir: str, config: TrainConfig, prompts: dict[str, str],
                scores: dict[str, float] | None = None) -> str:
    """Merge the adapter into the base and write a full encoder (LLM2Vec + sentence-transformers files and
    l2v's model card) into ``output_dir``, beside the run's other files; each file is moved into place whole.
    ``prompts``: the sentence-transformers prompts to save (:func:`saved_prompts`). ``scores``: the last
    evaluation's."""
    with atomic_directory(output_dir, entries_only=True) as tmp:
        encoder.save(tmp, merge_before_save=True, prompts=prompts)
    _write_card(output_dir, encoder, config, prompts, scores, merged=True)
    return str(output_dir)


def _write_card(folder: str, encoder, config: TrainConfig, prompts: dict[str, str], scores, merged: bool) -> None:
    """l2v's model card, written in the published folder (its usage snippet names that folder)."""
    from ..model_card import write_model_card

    adapters = [a for a in (getattr(config, "mntp_adapter", None), os.path.join(config.output_dir, "adapter")) if a]
    write_model_card(folder, encoder, base_model=config.base_model, adapters=adapters, merged=merged, prompts=prompts,
                     training=card_settings(config), scores=_main_scores(scores),
                     scores_suite=getattr(config, "eval_tasks", None) or None)


def training_prompts(config: TrainConfig) -> dict[str, str]:
    """The instructions the queries were trained with, as prompts: ``query`` when every data set shared one,
    else one prompt per data set name (``encode(..., prompt_name="packages")``)."""
    instructions = dict(getattr(config, "instructions", None) or {})
    default = getattr(config, "default_instruction", "") or ""
    distinct = {v for v in instructions.values() if v} | ({default} if default else set())
    if len(distinct) == 1:
        return {"query": distinct.pop()}
    return {name: text for name, text in instructions.items() if text}


def card_settings(config: TrainConfig) -> dict[str, object]:
    """The settings a model card lists: what was trained on what, for how long, with which loss."""
    keys = ("stage", "train_file", "max_steps", "batch_size", "max_length", "learning_rate", "lora_r", "loss",
            "temperature", "mask_probability", "pooling_mode", "seed")
    values = config.to_dict()
    values["stage"] = config.stage
    if values.get("train_file"):
        values["train_file"] = os.path.basename(values["train_file"])
    return {k: values[k] for k in keys if values.get(k) not in (None, "")}


def _main_scores(scores: dict[str, float] | None) -> dict[str, float] | None:
    """The evaluator's last scores as the trainer logged them (``eval_<name>``), by name."""
    return {k.removeprefix("eval_"): v for k, v in scores.items()} if scores else None
