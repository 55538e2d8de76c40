"""Contrastive stages on the LLM2Vec encoder: unsupervised SimCSE and supervised training.

Both pool with the encoder (``LLM2Vec.tokenize`` + ``LLM2Vec.forward``) and train a
fresh LoRA, on top of the base model with the MNTP adapter merged into it, with an
InfoNCE loss over cosine similarities. Every text of a step goes through the model
in one forward pass (one call per step is also what DistributedDataParallel needs),
unless ``gradcache_chunk_size`` is set: then GradCache (see ``gradcache.py``) embeds the
batch in chunks and backpropagates chunk by chunk, with the gradients of the one pass.
On several processes the documents of all processes are gathered, with gradients,
so each query is contrasted with the whole global batch.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..bidirectional import make_bidirectional
from ..encoder import LLM2Vec
from .config import ConfigError, ContrastiveConfig, SimCSEConfig, SupervisedConfig
from .data import BatchSchedule, load_texts, load_triples
from .gradcache import cached_backward, chunked
from .loop import Task, TrainResult, run
from .modeling import (add_lora, enable_checkpointing, model_kwargs, model_reference, save_adapter, save_merged, set_attention_dropout,
                       trainable_copy)

logger = logging.getLogger(__name__)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's loss used every slice
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_with_grad(tensor: torch.Tensor, num_processes: int) -> torch.Tensor:
    """Concatenate ``tensor`` over all processes (rank order), keeping gradients; identity on one.

    Every process must pass the same number of rows (the batch schedule guarantees it).
    """
    if num_processes == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
             temperature: float, rank: int = 0, num_processes: int = 1) -> torch.Tensor:
    """InfoNCE of local ``queries`` against the positives and hard negatives of all processes.

    Query i's positive is positive i of this process; every other positive and every
    hard negative of the global batch is a negative. Similarity: cosine / temperature.
    """
    docs = gather_with_grad(positives, num_processes)
    if negatives is not None:
        docs = torch.cat([docs, gather_with_grad(negatives, num_processes)], dim=0)
    scores = F.normalize(queries.float(), dim=-1) @ F.normalize(docs.float(), dim=-1).T / temperature
    labels = torch.arange(queries.shape[0], device=queries.device) + rank * queries.shape[0]
    return F.cross_entropy(scores, labels)


def load_encoder(config: ContrastiveConfig) -> LLM2Vec:
    """The encoder to train: base (+ merged MNTP adapter), bidirectional, dropout set, fresh LoRA."""
    encoder = LLM2Vec.from_pretrained(config.base_model, peft_model_name_or_path=config.mntp_adapter, merge_peft=True,
                                      enable_bidirectional=True, pooling_mode=config.pooling_mode,
                                      max_length=config.max_length, **model_kwargs(config))
    model = trainable_copy(encoder.model)
    make_bidirectional(model)
    set_attention_dropout(model, config.attention_dropout)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    encoder.model = add_lora(model, config)
    encoder.config = encoder.model.config
    return encoder


class ContrastiveTask(Task):
    config: ContrastiveConfig

    def __init__(self, config: ContrastiveConfig, accelerator):
        self.config = config
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        if config.gradcache_chunk_size is not None and getattr(accelerator, "distributed_type", None) == "DEEPSPEED":
            # DeepSpeed's engine counts backward calls as micro-steps; GradCache makes one per chunk.
            raise ConfigError("gradcache_chunk_size does not work under DeepSpeed; launch with DDP "
                              "(accelerate launch / torchrun without a DeepSpeed config)")
        self.encoder = load_encoder(config)
        self.peft_model = self.encoder.model
        # The whole encoder is the module handed to accelerate: under DDP its forward (pooling
        # included) is the one wrapped call, and ``encoder.model`` stays the plain peft model.
        self.module = self.encoder

    def inputs(self, batch: dict) -> list:
        """Every text of the batch, in the order ``contrast`` expects their embeddings."""
        raise NotImplementedError

    def contrast(self, reps: torch.Tensor, batch: dict) -> torch.Tensor:
        """The loss of ``batch`` from the embeddings of ``inputs(batch)``."""
        raise NotImplementedError

    def loss(self, module, batch: dict) -> tuple[torch.Tensor, int]:
        features = self.encoder.tokenize(self.inputs(batch))
        return self.contrast(module(features), batch), int(features["attention_mask"].sum())

    def backward(self, module, batch: dict, accelerator) -> tuple[torch.Tensor, int]:
        size = self.config.gradcache_chunk_size
        if size is None:
            return super().backward(module, batch, accelerator)
        # Tokenized once per chunk: both GradCache passes must see identical inputs.
        features = [self.encoder.tokenize(list(chunk)) for chunk in chunked(self.inputs(batch), size)]
        loss = cached_backward(module, features, lambda reps: self.contrast(reps, batch), accelerator.backward,
                               lambda: accelerator.no_sync(module), device=self.encoder.device)
        return loss, sum(int(f["attention_mask"].sum()) for f in features)

    def current_encoder(self) -> LLM2Vec:
        return self.encoder

    def save(self, output_dir: str) -> dict[str, str | None]:
        self.encoder.eval()
        base_ref = model_reference(self.config.mntp_adapter or self.config.base_model)
        # The adapter applies to the base with the MNTP adapter merged; recording the MNTP
        # adapter as its base lets LLM2Vec.from_pretrained(adapter_dir) rebuild that chain.
        adapter = save_adapter(self.peft_model, self.encoder.tokenizer, f"{output_dir}/adapter", base_ref,
                               encoder_config=self.encoder.encoder_config())
        merged = save_merged(self.encoder, output_dir) if self.config.merge_output else None
        return {"adapter_dir": adapter, "merged_dir": merged}


class SimCSETask(ContrastiveTask):
    def __init__(self, config: SimCSEConfig, accelerator):
        # Data first: a bad file fails before the model is loaded.
        self.texts = load_texts(config.train_file, config.text_field)
        self.schedule = BatchSchedule(len(self.texts), config.global_batch(accelerator.num_processes), config.seed)
        super().__init__(config, accelerator)

    def batch(self, items: list[int], index: int) -> dict:
        return {"texts": [self.texts[i] for i in items]}

    def inputs(self, batch: dict) -> list:
        # Each text twice: every row draws its own dropout mask, so the two views differ.
        return batch["texts"] + batch["texts"]

    def contrast(self, reps: torch.Tensor, batch: dict) -> torch.Tensor:
        n = len(batch["texts"])
        return info_nce(reps[:n], reps[n:], None, self.config.temperature, self.rank, self.world)


class SupervisedTask(ContrastiveTask):
    config: SupervisedConfig

    def __init__(self, config: SupervisedConfig, accelerator):
        self.triples = load_triples(config.train_file)
        unknown = sorted({t.dataset for t in self.triples if t.dataset and t.dataset not in config.instructions})
        if unknown and config.instructions:
            logger.warning("No instruction for dataset(s) %s; their queries use default_instruction %r",
                           unknown, config.default_instruction)
        groups = [t.dataset for t in self.triples] if config.homogeneous_batches else None
        self.schedule = BatchSchedule(len(self.triples), config.global_batch(accelerator.num_processes), config.seed, groups)
        super().__init__(config, accelerator)

    def query_input(self, query: str, dataset: str):
        """[instruction, query]: the encoder keeps instruction tokens out of the pooled vector."""
        instruction = self.config.instructions.get(dataset, self.config.default_instruction)
        return [instruction, query] if instruction else query

    def batch(self, items: list[int], index: int) -> dict:
        rows = [self.triples[i] for i in items]
        return {"queries": [self.query_input(r.query, r.dataset) for r in rows],
                "positives": [r.positive for r in rows], "negatives": [r.negative for r in rows]}

    def inputs(self, batch: dict) -> list:
        return batch["queries"] + batch["positives"] + batch["negatives"]

    def contrast(self, reps: torch.Tensor, batch: dict) -> torch.Tensor:
        n = len(batch["queries"])
        return info_nce(reps[:n], reps[n:2 * n], reps[2 * n:], self.config.temperature, self.rank, self.world)


def train_simcse(config: SimCSEConfig) -> TrainResult:
    """Run unsupervised SimCSE training; see :class:`SimCSEConfig`."""
    if not isinstance(config, SimCSEConfig):
        raise TypeError(f"train_simcse needs a SimCSEConfig, got {type(config).__name__}")
    return run(config, SimCSETask)


def train_supervised(config: SupervisedConfig) -> TrainResult:
    """Run supervised contrastive training; see :class:`SupervisedConfig`."""
    if not isinstance(config, SupervisedConfig):
        raise TypeError(f"train_supervised needs a SupervisedConfig, got {type(config).__name__}")
    return run(config, SupervisedTask)
