"""LLM2Vec: a decoder used as a text encoder.

The way of the data, top to bottom:
text / [instruction, text] → tokens + pooling mask (tokenization.py)
→ length-sorted, token-budget batches, padded or packed (packing.py)
→ hidden states of the bidirectional decoder → pooled vectors (pooling.py)
→ vectors back in input order.

The public surface matches the reference llm2vec (``from_pretrained``,
``encode``, ``save``, ``tokenize``/``forward`` for training) so its users can
switch by changing one import.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from . import distributed, files, loading
from .files import read_json_object, write_json
from .bidirectional import is_bidirectional, set_bidirectional
from .errors import check_positive_int
from .oom import run_splitting_on_oom
from .packing import (VARLEN_BACKENDS, Batch, PlannedBatch, attention_share, left_pad, pack, pad_left, padded_batch,
                      plan_batches)
from .pooling import check_pooling_mode, pool
from .st_model import read_prompts, write_sentence_transformers_files
from .tokenization import Composition, Tokenized, split_reference_string, tokenize, validate_inputs, warn_truncated

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

CONFIG_NAME = "llm2vec_config.json"
ENCODER_DEFAULTS = {"pooling_mode": "mean", "max_length": 512, "doc_max_length": 400, "skip_instruction": True}
# llm2vec_config.json keys: the encoder settings, and the attention direction when it is causal (the one
# record of the direction; older l2v versions also wrote it into config.json under LEGACY_DIRECTION_KEY).
SAVED_KEYS = (*ENCODER_DEFAULTS, "bidirectional")
LEGACY_DIRECTION_KEY = loading.SAVED_DIRECTION_KEY


@dataclass
class EncodePlan:
    """What ``LLM2Vec.encode`` would run for a list of inputs: their tokens and the batches, in run order.

    Under torchrun / accelerate the batches are this rank's share (``shards[rank]``, balanced by tokens).
    """

    tokens: Tokenized
    batches: list[PlannedBatch]
    device: torch.device
    shards: list[list[int]]
    rank: int = 0

    @property
    def lengths(self) -> list[int]:
        return self.tokens.lengths()

    @property
    def num_tokens(self) -> int:
        """Real tokens of the texts this process embeds."""
        return sum(b.tokens for b in self.batches)

    @property
    def computed_tokens(self) -> int:
        """Tokens the model runs on, padding included."""
        return sum(b.computed_tokens for b in self.batches)


class LLM2Vec(torch.nn.Module):
    """A decoder-only language model used as a text encoder (the LLM2Vec recipe).

    Texts (optionally after an instruction) run through the decoder, bidirectional unless loaded causal;
    the last hidden states of the text's tokens (not the instruction's) are pooled into one vector.
    Build one with :meth:`from_pretrained`; embed with :meth:`encode`; write a directory that
    ``from_pretrained``, the reference llm2vec and sentence-transformers load with :meth:`save`.

    ``model``: a transformers decoder without its LM head (e.g. ``LlamaModel``), possibly a peft model.
    ``tokenizer``: its tokenizer (padding set to EOS, on the left). ``pooling_mode``: ``mean``,
    ``weighted_mean``, ``eos_token``, ``last_token``, ``bos_token``. ``max_length``: token limit per input;
    ``doc_max_length``: tokens kept of each text (None: no cut). ``skip_instruction``: leave instruction
    tokens out of pooling. ``packing`` / ``max_tokens_per_batch``: see :meth:`plan`. ``prompts`` /
    ``default_prompt_name``: sentence-transformers prompts (name -> instruction) kept when saving.
    """

    def __init__(self, model, tokenizer, pooling_mode: str = "mean", max_length: int = 512,
                 doc_max_length: int | None = 400, skip_instruction: bool = True,
                 name_or_path: str | None = None, packing: bool | None = None,
                 max_tokens_per_batch: int | None = None, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None):
        super().__init__()
        check_positive_int("max_length", max_length)
        check_positive_int("doc_max_length", doc_max_length, none_means="no document cut")
        prompts = dict(prompts or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise ValueError(f"prompts must map names to instruction strings, got {prompts!r:.200}")
        if default_prompt_name is not None and default_prompt_name not in prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not one of the prompts {sorted(prompts)}")
        self.prompts = prompts  # sentence-transformers prompts (name -> instruction), kept when saving
        self.default_prompt_name = default_prompt_name
        self.model = model
        self.tokenizer = tokenizer
        self.pooling_mode = check_pooling_mode(pooling_mode)
        self.max_length = max_length
        self.doc_max_length = doc_max_length
        self.skip_instruction = bool(skip_instruction)
        self.name_or_path = name_or_path or getattr(model.config, "_name_or_path", "")
        self.packing = packing
        self.max_tokens_per_batch = max_tokens_per_batch
        self.config = model.config
        _prepare_tokenizer(tokenizer)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, base_model_name_or_path: str | os.PathLike | loading.ModelSource,
                        peft_model_name_or_path: str | os.PathLike | loading.ModelSource
                        | Sequence[str | os.PathLike | loading.ModelSource] | None = None,
                        merge_peft: bool = False,
                        enable_bidirectional: bool | None = None, pooling_mode: str | None = None,
                        max_length: int | None = None, doc_max_length: int | None = None,
                        skip_instruction: bool | None = None, packing: bool | None = None,
                        max_tokens_per_batch: int | None = None, peft_revision: str | Sequence[str | None] | None = None,
                        **model_kwargs) -> "LLM2Vec":
        """Load a decoder as an encoder.

        ``base_model_name_or_path``: an HF model dir or Hugging Face Hub id, a ``.gguf`` file, an
        l2v/llm2vec saved dir, a reference MNTP checkpoint (adapter-only dir or repository, merged
        into the base it names), ``"bundled"`` or ``"bundled-l2v"``, or a name already resolved by
        :func:`l2v_core.loading.resolve_source` (used as it is, not looked up again).
        ``peft_model_name_or_path``: one adapter (dir or Hub id) or a list applied in order (all but
        the last merged; the last merged too when ``merge_peft``).
        ``enable_bidirectional``: None keeps the direction the model was saved with (bidirectional
        unless it was saved causal). Encoder settings left as None come from ``llm2vec_config.json``
        (the adapter's, else the base's), else the defaults: pooling "mean", max_length 512,
        doc_max_length 400, skip_instruction True.
        Hub settings: ``revision`` (of the base), ``peft_revision`` (one for every adapter, or a
        list), ``token``, ``cache_dir``, ``local_files_only``. Other keyword arguments go to
        transformers' ``from_pretrained`` (``dtype``/``torch_dtype``, ``device_map``,
        ``attn_implementation``, ...).
        """
        hub = loading.HubOptions.pop(model_kwargs)
        source = loading.resolve_source(base_model_name_or_path, hub)
        adapters = peft_model_name_or_path
        single = isinstance(adapters, (str, os.PathLike, loading.ModelSource))
        adapters = [] if adapters is None else [adapters] if single else list(adapters)
        revisions = _per_adapter(peft_revision, len(adapters))
        adapters = [loading.resolve_adapter(a, hub.at(rev)) for a, rev in zip(adapters, revisions)]

        settings = dict(ENCODER_DEFAULTS)
        saved = read_encoder_config(adapters[-1].path if adapters else source.path)
        saved.pop("bidirectional", None)
        settings.update(saved)
        given = {"pooling_mode": pooling_mode, "max_length": max_length,
                 "doc_max_length": doc_max_length, "skip_instruction": skip_instruction}
        settings.update({k: v for k, v in given.items() if v is not None})
        if enable_bidirectional is None:
            enable_bidirectional = saved_direction([a.path for a in adapters[-1:]] + [source.path])

        tokenizer = loading.load_tokenizer(source)
        model = loading.load_base_model(source, **model_kwargs)
        set_bidirectional(model, enable_bidirectional)
        names = loading.source_names(source)
        for k, adapter in enumerate(adapters):
            model = loading.apply_adapter(model, adapter, base_names=names)
            names |= loading.source_names(adapter)
            if merge_peft or k < len(adapters) - 1:
                model = loading.merge_adapter(model)
        return cls(model, tokenizer, name_or_path=loading.read_name_or_path(source), packing=packing,
                   max_tokens_per_batch=max_tokens_per_batch, **settings)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _composition(self) -> Composition:
        return Composition(self.name_or_path, type(self.model.config).__name__, self.pooling_mode, self.tokenizer.eos_token)

    def _tokenize(self, pairs, skip_instruction: bool):
        return tokenize(pairs, self.tokenizer, self._composition(), max_length=self.max_length,
                        doc_max_length=self.doc_max_length, skip_instruction=skip_instruction)

    # ------------------------------------------------------------------ encoding
    def encode(self, sentences: str | Sequence[str | Sequence[str]], batch_size: int = 32,
               show_progress_bar: bool = True, convert_to_numpy: bool = False, convert_to_tensor: bool = False,
               device: str | torch.device | None = None, normalize_embeddings: bool = False,
               prompt: str | None = None) -> torch.Tensor | np.ndarray:
        """Embed texts; one vector per input, in input order (float32, on the CPU).

        ``sentences``: a string, a list of strings, or a list of ``[instruction, text]`` pairs (the
        instruction's tokens are left out of the pooled vector). ``prompt``: an instruction for the plain
        strings (pairs keep their own), as sentence-transformers' ``prompt``. ``batch_size``: at most this
        many texts per forward pass (see :meth:`plan`). ``convert_to_numpy``: a ``numpy.ndarray`` instead
        of a ``torch.Tensor`` (``convert_to_tensor`` wins when both are set). ``device``: where the model
        runs (default: CUDA if available, else CPU). ``normalize_embeddings``: unit length (L2), so a dot
        product is the cosine similarity. Returns an array of shape ``(len(sentences), hidden_size)``.
        """
        pairs = validate_inputs(sentences)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a string (an instruction), got {type(prompt).__name__}")
            items = [sentences] if isinstance(sentences, str) else list(sentences)
            if len(items) == len(pairs):  # (else: the reference's single [instruction, text, id] item)
                pairs = [(prompt, text) if isinstance(item, str) else (instruction, text)
                         for item, (instruction, text) in zip(items, pairs)]
        if not pairs:
            _check_batch_size(batch_size)
            empty = torch.empty(0, self.hidden_size)
            return empty.numpy() if convert_to_numpy and not convert_to_tensor else empty
        plan = self.plan(pairs, batch_size=batch_size, device=device)
        device = plan.device
        if self.device != device:
            self.model.to(device)
        self.model.eval()
        if plan.rank == 0:
            warn_truncated(plan.tokens.truncated, self.max_length, self.doc_max_length)

        vectors = torch.empty(len(pairs), self.hidden_size, dtype=torch.float32, device=device)
        mine = plan.shards[plan.rank]
        with torch.inference_mode(), tqdm(total=len(mine), desc="Encoding", unit="text",
                                          disable=not show_progress_bar or plan.rank != 0) as bar:
            def run(batch: PlannedBatch) -> None:
                self._embed_into(vectors, batch, plan.tokens, device)
                bar.update(len(batch.indices))

            run_splitting_on_oom(plan.batches, run, PlannedBatch.halves, size=lambda b: b.computed_tokens)
        if len(plan.shards) > 1:
            vectors = distributed.gather_rows(vectors[torch.tensor(mine, dtype=torch.long, device=device)],
                                              plan.shards, len(pairs))
        bad = torch.isnan(vectors).any(-1) | torch.isinf(vectors).any(-1)
        if bool(bad.any()):
            which = bad.nonzero().squeeze(-1)[:10].tolist()
            raise FloatingPointError(
                f"The model produced non-finite embeddings for inputs {which} (of {int(bad.sum())} in all); "
                "this usually means fp16 overflow or broken weights - try dtype=torch.float32 or bfloat16"
            )
        result = vectors.cpu()
        if normalize_embeddings:
            result = torch.nn.functional.normalize(result, p=2, dim=-1)
        return result.numpy() if convert_to_numpy and not convert_to_tensor else result

    def plan(self, sentences: str | Sequence[str | Sequence[str]], batch_size: int = 32,
             device: str | torch.device | None = None) -> EncodePlan:
        """The batches ``encode`` runs for ``sentences`` (same arguments), without running the model.

        Inputs are sorted by length, longest first. Packed batches (GPU, varlen attention backend)
        hold up to ``max_tokens_per_batch`` tokens (default ``batch_size`` x the longest text).
        Otherwise batches hold at most ``batch_size`` rows (and ``max_tokens_per_batch`` tokens with
        padding), cut where the modelled run time is least: rows of equal length run with no mask,
        rows of different lengths are left-padded and masked only where that beats one more pass.
        """
        pairs = validate_inputs(sentences)
        _check_batch_size(batch_size)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokens = self._tokenize(pairs, self.skip_instruction)
        lengths = tokens.lengths()
        rank, world_size = distributed.world()
        # Under torchrun / accelerate each rank embeds its share, balanced by tokens.
        shards = distributed.shard_by_tokens(lengths, world_size) if world_size > 1 else [list(range(len(pairs)))]
        order = sorted(shards[rank], key=lambda i: -lengths[i])
        packed = self._packs(device)
        budget = self.max_tokens_per_batch or (batch_size * max(lengths, default=1) if packed else None)
        batches = plan_batches(lengths, order, batch_size, budget, packed, device.type,
                               attention_share(self.model.config))
        return EncodePlan(tokens, batches, device, shards, rank)

    def _packs(self, device: torch.device) -> bool:
        if self.packing is not None:
            return self.packing
        # Packing pays where the kernel skips the masked-out blocks; a dense T x T mask would not.
        return device.type == "cuda" and self.model.config._attn_implementation in VARLEN_BACKENDS

    def _embed_into(self, out: torch.Tensor, batch: PlannedBatch, tokens: Tokenized, device) -> None:
        """Embed one planned batch into the rows of ``out`` it names."""
        ids = [tokens.input_ids[i] for i in batch.indices]
        masks = [tokens.pool_mask[i] for i in batch.indices]
        prepared = (pack(ids, masks, self.model.config._attn_implementation, self.model.dtype, device) if batch.packed
                    else pad_left(ids, masks, self.tokenizer.pad_token_id, device))
        out[torch.tensor(batch.indices, device=device)] = self._pooled(prepared)

    def _pooled(self, batch: Batch) -> torch.Tensor:
        states = self.model(**batch.model_inputs).last_hidden_state
        flat = states.reshape(-1, states.shape[-1])
        if batch.token_positions is not None:
            flat = flat[batch.token_positions]
        return pool(flat, batch.seq_index, batch.pool_mask, batch.num_seqs, self.pooling_mode)

    # ------------------------------------------------------------------ training API (reference-compatible)
    def tokenize(self, texts) -> dict[str, torch.Tensor]:
        """Left-padded features for ``forward``: ``input_ids``, ``attention_mask``, ``embed_mask``.

        Items are strings, [instruction, text] pairs, or the reference's ``instruction!@#$%^&*()text``.
        """
        items = [split_reference_string(t) if isinstance(t, str) else t for t in texts]
        pairs = validate_inputs(items)
        tokens = self._tokenize(pairs, skip_instruction=True)
        input_ids, attention, pool_mask = left_pad(tokens.input_ids, tokens.pool_mask, self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention, "embed_mask": pool_mask.long()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled embeddings of ``tokenize`` features, with autograd (for training).

        Left-padded rows run in length-sorted groups, cut as ``encode`` cuts its batches and each trimmed to
        its longest row: sentence-transformers' losses pad queries, positives and negatives to one width, so
        on the bundled recipe's batches about half of the positions were padding. Each text's vector is the
        same either way (padding never changes a vector); rows come back in their order."""
        device = self.device
        input_ids, attention = features["input_ids"].to(device), features["attention_mask"].to(device)
        embed_mask = features.get("embed_mask")
        pool_from = embed_mask.to(device) if (self.skip_instruction and embed_mask is not None) else attention
        lengths = attention.sum(-1).tolist()
        if not bool(attention[:, -1].all()) or len(set(lengths)) == 1:  # not left-padded, or nothing to trim
            return self._pooled(padded_batch(input_ids, attention, pool_from))
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups = plan_batches(lengths, order, len(lengths), None, False, device.type,
                              attention_share(self.model.config))
        vectors = []
        for group in groups:
            rows, width = torch.tensor(group.indices, device=device), max(group.lengths)
            vectors.append(self._pooled(padded_batch(input_ids[rows, -width:], attention[rows, -width:],
                                                     pool_from[rows, -width:])))
        ran = torch.tensor([i for group in groups for i in group.indices], device=device)  # row of each vector
        return torch.cat(vectors)[ran.argsort()]

    # ------------------------------------------------------------------ saving
    def encoder_config(self) -> dict:
        """What ``llm2vec_config.json`` records. ``bidirectional`` is written only for a causal model: the
        reference's loader refuses keys it does not know, and bidirectional is what it assumes anyway."""
        config = {"pooling_mode": self.pooling_mode, "max_length": self.max_length,
                  "doc_max_length": self.doc_max_length, "skip_instruction": self.skip_instruction}
        if not is_bidirectional(self.model):
            config["bidirectional"] = False
        return config

    def save(self, output_path: str | os.PathLike, merge_before_save: bool = False, save_config: bool = True,
             prompts: dict[str, str] | None = None, default_prompt_name: str | None = None) -> None:
        """Write weights (or the adapter, when unmerged), tokenizer, ``llm2vec_config.json`` and the
        sentence-transformers model files, so the directory loads with ``LLM2Vec.from_pretrained``, the
        reference llm2vec, and ``SentenceTransformer(path, trust_remote_code=True)``. ``prompts`` (name ->
        instruction) default to the ones the encoder was loaded with."""
        self.save_encoder_files(output_path, merge_before_save=merge_before_save, save_config=save_config)
        if prompts is None:
            prompts, default_prompt_name = self.prompts, default_prompt_name or self.default_prompt_name
        write_sentence_transformers_files(output_path, prompts=prompts, default_prompt_name=default_prompt_name)

    def save_encoder_files(self, output_path, merge_before_save: bool = False, save_config: bool = True) -> None:
        """The encoder's own files (what its sentence-transformers module saves): weights or adapter,
        tokenizer, and ``llm2vec_config.json`` when ``save_config``."""
        from peft import PeftModel

        output_path = os.fspath(output_path)
        os.makedirs(output_path, exist_ok=True)
        if merge_before_save and isinstance(self.model, PeftModel):
            self.model = loading.merge_adapter(self.model)
        model = loading.saveable(self.model)
        model.save_pretrained(output_path)
        self.tokenizer.save_pretrained(output_path)
        files.plain_file_modes(output_path, "*.safetensors")  # only the weights just written; the folder may hold the user's files
        config_file = os.path.join(output_path, "config.json")
        if os.path.isfile(config_file):
            # transformers 5 no longer records the model's name; chat templates are keyed on it.
            with open(config_file) as f:
                saved = json.load(f)
            saved.setdefault("_name_or_path", self.name_or_path)
            saved.pop(LEGACY_DIRECTION_KEY, None)  # the direction is llm2vec_config.json's alone
            write_json(config_file, saved)
        if save_config:
            write_json(os.path.join(output_path, CONFIG_NAME), self.encoder_config())


def read_encoder_config(path: str) -> dict:
    """Settings saved in a directory: ``llm2vec_config.json`` (encoder settings and ``bidirectional``,
    checked) and the sentence-transformers prompts of ``config_sentence_transformers.json``."""
    file = os.path.join(path, CONFIG_NAME)
    prompts = read_prompts(path) if os.path.isdir(path) else {}
    if not os.path.isfile(file):
        return prompts
    saved = read_json_object(file, loading.ModelLoadError, "a JSON object of encoder settings")
    unknown = set(saved) - set(SAVED_KEYS)
    if unknown:
        logger.warning("Ignoring unknown keys in %s: %s", file, sorted(unknown))
    if "bidirectional" in saved and not isinstance(saved["bidirectional"], bool):
        raise loading.ModelLoadError(f"{file}: 'bidirectional' must be true or false, got {saved['bidirectional']!r}")
    return {**{k: v for k, v in saved.items() if k in SAVED_KEYS}, **prompts}


def saved_direction(folders: list[str]) -> bool:
    """The attention direction a model was saved with: ``bidirectional`` of the first ``llm2vec_config.json``
    among ``folders`` (the adapter's, then the base's), written only for a causal model, so an absent key means
    bidirectional (as the reference assumes). Folders written before that file was the one record carry the
    direction only in config.json; without either, bidirectional."""
    for folder in folders:
        if os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            return read_encoder_config(folder).get("bidirectional", True)
    legacy = loading.saved_direction(folders[-1])
    return True if legacy is None else legacy


def _per_adapter(revision, count: int) -> list:
    """``peft_revision`` as one revision per adapter: one string for all of them, or a list."""
    if revision is None or isinstance(revision, str):
        return [revision] * count
    revisions = list(revision)
    if len(revisions) != count:
        raise ValueError(f"peft_revision has {len(revisions)} entries for {count} adapter(s); give one per adapter")
    return revisions


def _prepare_tokenizer(tokenizer) -> None:
    """As the reference: pad with EOS, pad on the left."""
    if tokenizer.eos_token is None:
        raise ValueError("The tokenizer has no EOS token; l2v pads with it and eos_token pooling needs it")
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"



def _check_batch_size(batch_size) -> None:
    check_positive_int("batch_size", batch_size)
