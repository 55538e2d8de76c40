"""Masked next-token prediction (MNTP), the first LLM2Vec stage.

A fraction of the tokens is masked BERT-style (80% mask token, 10% random token,
10% unchanged; by transformers' ``DataCollatorForLanguageModeling``, never special
or pad tokens). The decoder attends bidirectionally, and a masked token i is
predicted from the output at position i-1 (the position whose LM head was trained
to predict token i), so the first token is never a target. LoRA trains only the
headless decoder, so the adapter applies to ``AutoModel`` as the reference's does.
"""
from __future__ import annotations

import copy
import logging
import zlib
from pathlib import Path

import numpy as np

import torch
import torch.nn.functional as F

from .. import loading
from ..bidirectional import make_bidirectional
from .arguments import training_arguments
from .config import ConfigError, MNTPConfig
from .data import load_texts
from .modeling import (add_lora, enable_checkpointing, model_kwargs, save_adapter, save_merged, saved_prompts,
                       trainable_copy)
from .run import (AdapterCheckpoints, TrainResult, begin_run, check_resume, metrics_callback, num_processes,
                  train_and_save)

logger = logging.getLogger(__name__)

IGNORE = -100


def resolve_mask_token(tokenizer, wanted: str) -> tuple[str, int]:
    """The tokenizer's own mask token if it has one, else ``wanted`` (a vocabulary token, or
    "eos" / "pad" / "unk" for the tokenizer's)."""
    if tokenizer.mask_token is not None and tokenizer.mask_token_id is not None:
        return tokenizer.mask_token, int(tokenizer.mask_token_id)
    named = {"eos": tokenizer.eos_token, "pad": tokenizer.pad_token, "unk": tokenizer.unk_token}
    token = named[wanted] if wanted in named else wanted
    if token is None:
        raise ConfigError(f"mask_token {wanted!r}: the tokenizer has no {wanted} token; name a vocabulary token such as '_'")
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = tokenizer.unk_token_id
    if token_id is None or (token_id == unk and token != tokenizer.unk_token):
        raise ConfigError(f"mask_token {token!r} is not a single token of this tokenizer's vocabulary; "
                          "choose one that is (e.g. '_' for Llama/Mistral tokenizers) or 'eos' / 'pad' / 'unk'")
    return token, int(token_id)


def make_collator(tokenizer, mask_token: str, mask_probability: float, seed: int = 0):
    """transformers' MLM collator on a private copy of the tokenizer (the copy gets the mask
    token and right padding; the tokenizer that is saved with the model stays untouched)."""
    from transformers import DataCollatorForLanguageModeling

    tok = copy.deepcopy(tokenizer)
    if tok.mask_token is None:
        tok.mask_token = mask_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    # Right padding keeps real tokens at positions 0..n-1 (position ids need no adjusting).
    tok.padding_side = "right"
    return ContentSeededCollator(seed, tok, mlm=True, mlm_probability=mask_probability, mask_replace_prob=0.8,
                                 random_replace_prob=0.1)


def ContentSeededCollator(seed: int, *args, **kwargs):
    """transformers' MLM collator whose masks are drawn from a generator seeded by ``seed`` and the batch's token
    ids. The trainer collates the next batch before it saves a checkpoint and again, from other random states,
    after it resumes; masks that depend only on the batch make a resumed run mask exactly as an unbroken one."""
    from transformers import DataCollatorForLanguageModeling

    class Collator(DataCollatorForLanguageModeling):
        def __call__(self, features, return_tensors=None):
            ids = [t for f in features for t in f["input_ids"]]
            self.generator = torch.Generator().manual_seed(
                zlib.crc32(np.asarray(ids, dtype=np.int64).tobytes()) + seed * 1_000_003)
            return super().__call__(features, return_tensors)

    return Collator(*args, **kwargs)


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with the outputs: position i is trained on the label of token i+1.

    ``labels`` holds the original token at masked positions and -100 elsewhere (as the MLM
    collator returns it); the last position gets no target, and token 0 is nobody's target.
    """
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return targets


def tokenize_corpus(texts, tokenizer, max_length: int, line_by_line: bool):
    """A dataset of ``input_ids`` / ``attention_mask`` / ``special_tokens_mask`` examples, built with
    ``datasets.map`` (Arrow files, memory-mapped: memory does not grow with the corpus).

    Grouped mode (the reference's default, as transformers' run_mlm) concatenates the texts of each
    chunk of 1,000 and cuts blocks of exactly ``max_length`` tokens (the remainder of a chunk is dropped);
    a tokenizer that adds no special tokens gets its EOS between texts so they stay apart.
    """
    separator = tokenizer.eos_token_id

    def line_by_line_rows(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length, return_special_tokens_mask=True)
        keep = [i for i, ids in enumerate(enc["input_ids"]) if ids]
        return {"input_ids": [enc["input_ids"][i] for i in keep],
                "attention_mask": [[1] * len(enc["input_ids"][i]) for i in keep],
                "special_tokens_mask": [enc["special_tokens_mask"][i] for i in keep]}

    def blocks(batch):
        enc = tokenizer(batch["text"], return_special_tokens_mask=True)
        ids_all: list[int] = []
        special_all: list[int] = []
        for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
            ids_all += ids
            special_all += special
            if not any(special) and separator is not None:
                ids_all.append(separator)
                special_all.append(1)
        count = len(ids_all) // max_length
        return {"input_ids": [ids_all[k * max_length:(k + 1) * max_length] for k in range(count)],
                "attention_mask": [[1] * max_length] * count,
                "special_tokens_mask": [special_all[k * max_length:(k + 1) * max_length] for k in range(count)]}

    return texts.map(line_by_line_rows if line_by_line else blocks, batched=True, batch_size=1000,
                     remove_columns=texts.column_names, desc="tokenizing")


class MNTPModel(torch.nn.Module):
    """The (peft-wrapped) headless decoder plus the frozen LM head; ``forward`` returns the MNTP loss."""

    def __init__(self, backbone: torch.nn.Module, lm_head: torch.nn.Module, softcap: float | None = None):
        super().__init__()
        self.backbone = backbone
        self.lm_head = lm_head
        self.softcap = softcap

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = next_token_targets(labels)
        keep = targets != IGNORE
        if not bool(keep.any()):  # nothing masked in this batch: a zero loss that still has a graph
            return hidden.sum() * 0.0
        # Only the positions that have a target go through the LM head: a full
        # (batch x length x vocab) logits tensor would dominate memory.
        logits = self.lm_head(hidden[keep]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return F.cross_entropy(logits, targets[keep])


def _require_trained_lm_head(lm, report, name: str) -> None:
    """MNTP trains against the model's own LM head; a head the checkpoint lacked is random noise."""
    head = lm.get_output_embeddings()
    keys = [f"{prefix}.{param}" for prefix, module in lm.named_modules() if module is head
            for param, _ in module.named_parameters()]
    fresh = report.newly_initialised(keys)
    if fresh:
        raise ConfigError(f"base_model {name!r} has no trained LM head ({', '.join(fresh)} missing from its checkpoint, "
                          "initialised at random); MNTP needs the causal-LM checkpoint, not a headless encoder "
                          "directory such as an l2v-convert output")


def load_mntp_model(config: MNTPConfig, source: str):
    """The bidirectional decoder with LoRA on its headless part, under the frozen LM head, as ``MNTPModel``."""
    from transformers import AutoModelForCausalLM

    lm, report = loading.load_base_model(source, model_class=AutoModelForCausalLM, with_report=True,
                                         **model_kwargs(config))
    _require_trained_lm_head(lm, report, config.base_model)
    lm = trainable_copy(lm)
    make_bidirectional(lm)
    lm.config.use_cache = False
    lm.requires_grad_(False)
    if config.gradient_checkpointing:
        enable_checkpointing(lm)
    peft_model = add_lora(getattr(lm, lm.base_model_prefix), config)
    return MNTPModel(peft_model, lm.get_output_embeddings(), getattr(lm.config, "final_logit_softcapping", None))


def mntp_trainer_class():
    """transformers' Trainer on ``MNTPModel`` (whose forward is the loss), with adapter-only checkpoints and
    evaluation by a sentence-transformers evaluator of the encoder being trained."""
    from transformers import Trainer

    class MNTPLossAndScores(Trainer):
        """Evaluation is the evaluator's scores of the encoder (the MNTP loss on held-out data is not asked for)."""
        evaluator = None
        encoder = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         labels=inputs["labels"])
            return (loss, None) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            from sentence_transformers import SentenceTransformer

            from ..st_modules import LLM2VecModule

            self.model.eval()
            scores = self.evaluator(SentenceTransformer(modules=[LLM2VecModule(self.encoder)]),
                                    steps=self.state.global_step)
            self.model.train()
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in scores.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class MNTPTrainer(AdapterCheckpoints, MNTPLossAndScores):
        pass

    return MNTPTrainer


def train_mntp(config: MNTPConfig, evaluator=None, callbacks=(), prompts=None) -> TrainResult:
    """Run MNTP training on transformers' Trainer; see :class:`MNTPConfig` for the settings.
    ``prompts``: saved with the adapter and the merged encoder (see :func:`~l2v_core.training.modeling.save_merged`)."""
    if not isinstance(config, MNTPConfig):
        raise TypeError(f"train_mntp needs an MNTPConfig, got {type(config).__name__}")
    from ..encoder import LLM2Vec

    world, out = num_processes(), Path(config.output_dir)
    resume_from = check_resume(config, out, world)
    args = training_arguments(config, "mntp", world, evaluating=evaluator is not None,
                              include_num_input_tokens_seen="non_padding")
    source = loading.resolve_source(config.base_model)
    tokenizer = loading.load_tokenizer(source)
    mask_token, mask_token_id = resolve_mask_token(tokenizer, config.mask_token)
    with args.main_process_first():  # data first: a bad file fails before the model is loaded
        texts = load_texts(config.train_file, config.text_field, cache_dir=str(out / ".data_cache"))
        examples = tokenize_corpus(texts, tokenizer, config.max_length, config.line_by_line)
    begin_run(config, args, len(examples), f"blocks of {config.max_length} tokens",
              "Lower batch_size or max_length, or add data.")
    model = load_mntp_model(config, source)
    logger.info("MNTP: %d examples of up to %d tokens; mask token %r (id %d)", len(examples), config.max_length,
                mask_token, mask_token_id)
    metrics = metrics_callback(config, resume_from, evaluator)
    collator = make_collator(tokenizer, mask_token, config.mask_probability, config.seed)
    trainer = mntp_trainer_class()(model=model, args=args, train_dataset=examples, data_collator=collator,
                                   callbacks=[metrics, *callbacks],
                                   eval_dataset=examples if evaluator is not None else None)
    trainer.peft_model = model.backbone
    # The encoder MNTP produces: the bidirectional backbone with the current adapter, mean pooling
    # (what LLM2Vec.from_pretrained of the saved adapter gives).
    trainer.encoder = LLM2Vec(model.backbone, copy.deepcopy(tokenizer), pooling_mode="mean",
                              name_or_path=loading.read_name_or_path(source))
    trainer.evaluator = metrics.evaluator

    def save() -> dict[str, str | None]:
        model.backbone.eval()
        saved = saved_prompts(prompts, config)
        adapter = save_adapter(trainer.encoder, f"{out}/adapter", config, saved, metrics.last_scores)
        merged = (save_merged(trainer.encoder, str(out), config, saved, metrics.last_scores) if config.merge_output
                  else None)
        return {"adapter_dir": adapter, "merged_dir": merged}

    return train_and_save(trainer, config, args, metrics, resume_from, save)
