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

import torch
import torch.nn.functional as F

from .. import loading
from ..bidirectional import make_bidirectional
from .config import ConfigError, MNTPConfig
from .data import BatchSchedule, load_texts
from .loop import Task, TrainResult, run
from .modeling import add_lora, enable_checkpointing, model_kwargs, model_reference, save_adapter, save_merged, trainable_copy

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


def make_collator(tokenizer, mask_token: str, mask_probability: float):
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
    return DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=mask_probability,
                                           mask_replace_prob=0.8, random_replace_prob=0.1)


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with the outputs: position i is trained on the label of token i+1.

    ``labels`` holds the original token at masked positions and -100 elsewhere (as the MLM
    collator returns it); the last position gets no target, and token 0 is nobody's target.
    """
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return targets


def tokenize_corpus(texts: list[str], tokenizer, max_length: int, line_by_line: bool) -> list[dict]:
    """Examples of ``input_ids`` / ``attention_mask`` / ``special_tokens_mask``.

    Grouped mode (the reference's default) concatenates all texts and cuts blocks of
    exactly ``max_length`` tokens (the remainder is dropped); a tokenizer that adds no
    special tokens gets its EOS between texts so they stay apart.
    """
    if line_by_line:
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        return [{"input_ids": ids, "attention_mask": [1] * len(ids), "special_tokens_mask": sp}
                for ids, sp in zip(enc["input_ids"], enc["special_tokens_mask"]) if ids]
    enc = tokenizer(texts, return_special_tokens_mask=True)
    ids_all: list[int] = []
    special_all: list[int] = []
    separator = tokenizer.eos_token_id
    for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
        ids_all += ids
        special_all += special
        if not any(special) and separator is not None:
            ids_all.append(separator)
            special_all.append(1)
    blocks = len(ids_all) // max_length
    return [{"input_ids": ids_all[k * max_length:(k + 1) * max_length],
             "attention_mask": [1] * max_length,
             "special_tokens_mask": special_all[k * max_length:(k + 1) * max_length]} for k in range(blocks)]


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


class MNTPTask(Task):
    def __init__(self, config: MNTPConfig, accelerator):
        from transformers import AutoModelForCausalLM

        self.config = config
        self.rank = accelerator.process_index
        texts = load_texts(config.train_file, config.text_field)
        source = loading.resolve_source(config.base_model)
        self.tokenizer = loading.load_tokenizer(source)
        self.name_or_path = loading.read_name_or_path(source)
        mask_token, self.mask_token_id = resolve_mask_token(self.tokenizer, config.mask_token)
        self.collator = make_collator(self.tokenizer, mask_token, config.mask_probability)
        self.examples = tokenize_corpus(texts, self.tokenizer, config.max_length, config.line_by_line)
        self.schedule = BatchSchedule(len(self.examples), config.global_batch(accelerator.num_processes), config.seed)

        lm, report = loading.load_base_model(source, model_class=AutoModelForCausalLM, with_report=True,
                                             **model_kwargs(config))
        _require_trained_lm_head(lm, report, config.base_model)
        lm = trainable_copy(lm)
        make_bidirectional(lm)
        lm.config.use_cache = False
        lm.requires_grad_(False)
        if config.gradient_checkpointing:
            enable_checkpointing(lm)
        backbone = getattr(lm, lm.base_model_prefix)
        self.peft_model = add_lora(backbone, config)
        softcap = getattr(lm.config, "final_logit_softcapping", None)
        self.module = MNTPModel(self.peft_model, lm.get_output_embeddings(), softcap)
        logger.info("MNTP: %d blocks of up to %d tokens from %d texts; mask token %r (id %d)",
                    len(self.examples), config.max_length, len(texts), mask_token, self.mask_token_id)

    def batch(self, items: list[int], index: int) -> dict:
        # Masks depend only on (seed, micro-batch, process), so a resumed run masks alike.
        self.collator.generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + index) * 131 + self.rank)
        return self.collator([dict(self.examples[i]) for i in items])

    def loss(self, module, batch: dict) -> tuple[torch.Tensor, int]:
        device = next(self.peft_model.parameters()).device
        loss = module(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      labels=batch["labels"].to(device))
        return loss, int(batch["attention_mask"].sum())

    _encoder = None

    def current_encoder(self):
        """The encoder MNTP produces: the bidirectional backbone with the current adapter, mean pooling
        (what ``LLM2Vec.from_pretrained`` of the saved adapter gives)."""
        if self._encoder is None:
            from ..encoder import LLM2Vec

            self._encoder = LLM2Vec(self.peft_model, copy.deepcopy(self.tokenizer), pooling_mode="mean",
                                    name_or_path=self.name_or_path)
        return self._encoder

    def save(self, output_dir: str) -> dict[str, str | None]:
        self.peft_model.eval()
        encoder = self.current_encoder()
        adapter = save_adapter(self.peft_model, self.tokenizer, f"{output_dir}/adapter",
                               model_reference(self.config.base_model), encoder_config=encoder.encoder_config())
        merged = save_merged(encoder, output_dir) if self.config.merge_output else None
        return {"adapter_dir": adapter, "merged_dir": merged}


def train_mntp(config: MNTPConfig) -> TrainResult:
    """Run MNTP training; see :class:`MNTPConfig` for the settings."""
    if not isinstance(config, MNTPConfig):
        raise TypeError(f"train_mntp needs an MNTPConfig, got {type(config).__name__}")
    return run(config, MNTPTask)
