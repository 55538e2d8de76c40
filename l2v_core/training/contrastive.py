"""Unsupervised SimCSE and supervised contrastive training on sentence-transformers' trainer.

The model is a ``SentenceTransformer`` whose one module is l2v's ``LLM2VecModule`` (tokenization with
the instruction mask, the bidirectional decoder with a fresh LoRA on top of the base with the MNTP
adapter merged, pooling). The loss is sentence-transformers' ``MultipleNegativesRankingLoss`` (InfoNCE
over cosine similarities / temperature, documents gathered across processes), or its GradCache form
``CachedMultipleNegativesRankingLoss`` when ``gradcache_chunk_size`` is set, or any loss named by ``loss``.
SimCSE trains on (text, text) pairs: each column's forward pass draws its own dropout, so the views differ.
Supervised trains on (query, positive, negative); with ``homogeneous_batches`` each dataset is its own
dataset of a multi-dataset run (one dataset per batch), and its instruction is the trainer's prompt for
its ``query`` column, which ``LLM2VecModule`` keeps out of the pooled vector as ``encode`` does.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from pathlib import Path

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from ..bidirectional import make_bidirectional
from ..encoder import LLM2Vec
from .arguments import training_arguments
from .config import ConfigError, ContrastiveConfig, SimCSEConfig, SupervisedConfig
from .data import load_texts, load_triples
from .modeling import (add_lora, enable_checkpointing, model_kwargs, save_adapter, save_merged, saved_prompts,
                       set_attention_dropout, trainable_copy)
from .run import (AdapterCheckpoints, TrainResult, begin_run, check_resume, metrics_callback, num_processes,
                  train_and_save)

logger = logging.getLogger(__name__)
CONTRASTIVE = ("MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss")


def load_encoder(config: ContrastiveConfig) -> LLM2Vec:
    """The encoder to train: base (+ merged MNTP adapter), bidirectional, dropout set, fresh LoRA.
    Its ``max_length`` is its own (the base's, else 512): the length it is evaluated and saved with;
    training cuts texts at ``config.max_length`` (see :func:`train_contrastive`)."""
    encoder = LLM2Vec.from_pretrained(config.base_model, peft_model_name_or_path=config.mntp_adapter, merge_peft=True,
                                      enable_bidirectional=True, pooling_mode=config.pooling_mode,
                                      **model_kwargs(config))
    model = trainable_copy(encoder.model)
    make_bidirectional(model)
    set_attention_dropout(model, config.attention_dropout)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    encoder.model = add_lora(model, config)
    encoder.config = encoder.model.config
    return encoder


class OnePassViewsLoss(MultipleNegativesRankingLoss):
    """InfoNCE of SimCSE's two views with both in one forward pass (a batch of 2B rows, each row drawing its
    own dropout mask), as the LLM2Vec recipe does. sentence-transformers keeps the first column's forward
    apart (query and document columns differ in width); SimCSE's columns are the same texts, so merging
    costs no padding and saves one pass of per-step overhead."""

    def forward(self, sentence_features, labels):
        return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features, separate_first=False),
                                                 labels)


def build_loss(model, config: ContrastiveConfig):
    """The contrastive loss (GradCache form with ``gradcache_chunk_size``), wrapped by ``loss`` when that names a
    wrapping loss (one taking ``loss=``, such as MatryoshkaLoss), or ``loss`` itself."""
    from sentence_transformers.sentence_transformer import losses

    names = [n for n in dir(losses) if n.endswith("Loss") and inspect.isclass(getattr(losses, n))]
    if config.loss not in names:
        close = difflib.get_close_matches(config.loss, names, n=1)
        raise ConfigError(f"`loss` {config.loss!r} is not a sentence-transformers loss"
                          + (f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(names)})"))
    cls = getattr(losses, config.loss)
    wraps = "loss" in inspect.signature(cls.__init__).parameters
    contrastive_args = {"scale": 1.0 / config.temperature, "gather_across_devices": True}
    if config.loss in CONTRASTIVE or not wraps:
        contrastive_args.update(config.loss_args)
    try:
        if config.gradcache_chunk_size is not None:
            base = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=config.gradcache_chunk_size,
                                                             **contrastive_args)
        else:
            one_pass = isinstance(config, SimCSEConfig)
            base = (OnePassViewsLoss if one_pass else losses.MultipleNegativesRankingLoss)(model, **contrastive_args)
        if config.loss in CONTRASTIVE:
            return base
        return cls(model, base, **config.loss_args) if wraps else cls(model, **config.loss_args)
    except TypeError as err:
        raise ConfigError(f"`loss_args` do not fit {config.loss}: {err}") from None


def supervised_data(config: SupervisedConfig, cache_dir: str):
    """(dataset, prompts): one dataset per data set name when batches are homogeneous, else one dataset;
    the prompts put each data set's instruction on its queries."""
    from datasets import DatasetDict

    rows = load_triples(config.train_file, cache_dir=cache_dir)
    names = sorted(set(rows["dataset"]))
    instruction = {n: config.instructions.get(n, config.default_instruction) for n in names}
    missing = [n for n in names if n and n not in config.instructions]
    if missing and config.instructions:
        logger.warning("No instruction for dataset(s) %s; their queries use default_instruction %r",
                       missing, config.default_instruction)
    if not config.homogeneous_batches:
        if len(set(instruction.values())) > 1:
            raise ConfigError("`homogeneous_batches` false mixes data sets in a batch, but their `instructions` differ; "
                              "set homogeneous_batches true (one data set per batch)")
        return rows.remove_columns("dataset"), {"query": next(iter(instruction.values()))}
    parts = {(n or "default"): rows.filter(lambda d, n=n: d == n, input_columns="dataset").remove_columns("dataset")
             for n in names}
    prompts = {(n or "default"): {"query": instruction[n]} for n in names if instruction[n]}
    return DatasetDict(parts), prompts


def train_contrastive(config: ContrastiveConfig, evaluator=None, callbacks=(), prompts=None) -> TrainResult:
    """Run SimCSE or supervised training; see :class:`SimCSEConfig` and :class:`SupervisedConfig`.
    ``prompts``: saved with the adapter and the merged encoder (see :func:`~l2v_core.training.modeling.save_merged`)."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    from ..st_modules import LLM2VecModule

    class Trainer(AdapterCheckpoints, SentenceTransformerTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            # The trainer counts tokens of a single `input_ids` input; these batches hold one per column.
            tokens = sum(v.sum() for k, v in inputs.items() if k.endswith("attention_mask"))
            self.state.num_input_tokens_seen += int(self.accelerator.gather(torch.as_tensor(tokens).reshape(1)).sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

    world = num_processes()
    out = Path(config.output_dir)
    resume_from = check_resume(config, out, world)
    probe = training_arguments(config, config.stage, world)
    with probe.main_process_first():  # data first (a bad file fails before the model loads), written once
        cache = str(out / ".data_cache")
        if isinstance(config, SupervisedConfig):
            dataset, column_prompts = supervised_data(config, cache)
        else:
            dataset = load_texts(config.train_file, config.text_field, ("anchor", "positive"), cache)
            column_prompts = None
    if isinstance(dataset, dict):  # batches stay inside one data set: one of them must fill a batch
        begin_run(config, probe, max(map(len, dataset.values())),
                  f"rows in its largest data set (sizes {sorted(map(len, dataset.values()))})")
    else:
        begin_run(config, probe, len(dataset), "texts" if column_prompts is None else "rows")
    encoder = load_encoder(config)
    # Training batches are cut at the training length; evaluation and the saved encoder use the encoder's own.
    own_length, encoder.max_length = encoder.max_length, config.max_length
    model = SentenceTransformer(modules=[LLM2VecModule(encoder)])
    args = training_arguments(config, config.stage, world, prompts=column_prompts, batch_sampler="batch_sampler",
                              multi_dataset_batch_sampler="proportional", evaluating=evaluator is not None)
    metrics = metrics_callback(config, resume_from, evaluator, encoder, own_length)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, loss=build_loss(model, config),
                      evaluator=metrics.evaluator, callbacks=[metrics, *callbacks])
    trainer.peft_model = encoder.model

    def save() -> dict[str, str | None]:
        encoder.max_length = own_length
        return save_contrastive(encoder, config, prompts, metrics.last_scores)

    return train_and_save(trainer, config, args, metrics, resume_from, save)


def save_contrastive(encoder: LLM2Vec, config: ContrastiveConfig, prompts=None, scores=None) -> dict[str, str | None]:
    encoder.eval()
    out = config.output_dir
    # The adapter applies to the base with the MNTP adapter merged; it records the MNTP adapter as its
    # base, so LLM2Vec.from_pretrained(adapter_dir) rebuilds that chain.
    prompts = saved_prompts(prompts, config)
    adapter = save_adapter(encoder, f"{out}/adapter", config, prompts, scores)
    merged = save_merged(encoder, out, config, prompts, scores) if config.merge_output else None
    return {"adapter_dir": adapter, "merged_dir": merged}


def train_simcse(config: SimCSEConfig, evaluator=None, callbacks=(), prompts=None) -> TrainResult:
    if not isinstance(config, SimCSEConfig):
        raise TypeError(f"train_simcse needs a SimCSEConfig, got {type(config).__name__}")
    return train_contrastive(config, evaluator, callbacks, prompts)


def train_supervised(config: SupervisedConfig, evaluator=None, callbacks=(), prompts=None) -> TrainResult:
    if not isinstance(config, SupervisedConfig):
        raise TypeError(f"train_supervised needs a SupervisedConfig, got {type(config).__name__}")
    return train_contrastive(config, evaluator, callbacks, prompts)
