"""Per-layer word vectors from a frozen model, computed once and cached on disk.

A sentence's words are joined with single spaces and tokenized as ordinary text,
so sub-tokens look like what the model saw in training (byte-level BPE tokenizers
then get their space-prefixed pieces). Character offsets map sub-tokens back to
words; a word's vector is its first sub-token's hidden state by default (``last``
or ``mean`` of its sub-tokens as options). Sequences are padded on the right by
this module itself, whatever the tokenizer's ``padding_side``: real tokens then
keep positions 0..n-1, as in an unpadded forward pass.

Every requested layer comes out of the same forward pass (``hidden_states``:
layer 0 is the embedding output, layer L the last layer), so probing all 33
layers of a 7B model costs one pass over the data. The result is stored as one
``.npy`` per data file, shaped (layers, words, hidden), float32: about
``layers * words * hidden * 4`` bytes (CoNLL-2003 train, 204k words, 33 layers of
4096: ~110 GB; pick fewer layers for big models).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from l2v_core.files import atomic_write, write_json
from l2v_core.oom import run_splitting_on_oom
from l2v_core.errors import check_positive_int

logger = logging.getLogger(__name__)

POOLINGS = ("first", "last", "mean")
CACHE_FORMAT = 1


# ---------------------------------------------------------------------- model access
def resolve_model(encoder) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) from an ``LLM2Vec``, a sentence-transformers model, or a ``(model, tokenizer)`` pair."""
    if isinstance(encoder, (tuple, list)) and len(encoder) == 2:
        model, tokenizer = encoder
    elif hasattr(encoder, "model") and hasattr(encoder, "tokenizer"):
        model, tokenizer = encoder.model, encoder.tokenizer
    elif hasattr(encoder, "tokenizer") and hasattr(encoder, "__getitem__") and hasattr(encoder[0], "auto_model"):
        model, tokenizer = encoder[0].auto_model, encoder.tokenizer
    else:
        raise TypeError(
            f"Cannot get a model and tokenizer from {type(encoder).__name__}; pass an l2v_core LLM2Vec, "
            "a SentenceTransformer, or a (transformers model, tokenizer) pair"
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Expected a torch model, got {type(model).__name__}")
    from transformers import PreTrainedModel

    # A *ForCausalLM computes vocabulary logits we do not need; its headless base gives the same hidden states.
    if isinstance(model, PreTrainedModel) and model.base_model is not model:
        model = model.base_model
    return model, tokenizer


def num_hidden_layers(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{type(model).__name__} has no config.num_hidden_layers; cannot resolve layer numbers")
    return n


def hidden_size(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def parse_layers(spec: str | int | Sequence[int] | None, num_layers: int) -> list[int]:
    """Layer numbers from ``all`` (None), ``last``, ``"0,8,16"``, an int or a list; negatives count from the end.

    Layer 0 is the embedding output, ``num_layers`` the last transformer layer.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(num_layers + 1))
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "last":
            return [num_layers]
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"Bad layers spec {spec!r}; use 'all', 'last' or comma-separated integers like '0,8,16'") from None
    elif isinstance(spec, int):
        values = [spec]
    else:
        values = [int(v) for v in spec]
    if not values:
        raise ValueError(f"Layers spec {spec!r} names no layer")
    out = []
    for v in values:
        resolved = v + num_layers + 1 if v < 0 else v
        if not 0 <= resolved <= num_layers:
            raise ValueError(f"Layer {v} is out of range: this model has layers 0 (embeddings) to {num_layers}")
        out.append(resolved)
    return sorted(set(out))


# ---------------------------------------------------------------------- words -> sub-tokens
@dataclass
class Piece:
    """One model input: a sentence, or a chunk of a sentence too long for ``max_length``."""

    sentence: int
    first_word: int
    input_ids: list[int]
    token_words: list[tuple[int, int]]
    """(token position, word index within the piece) pairs that feed the word's vector."""


def _word_tokens(tokenizer, words: Sequence[str], truncate_to: int | None = None):
    """Token ids of the space-joined words and, per word, the positions of the tokens covering it."""
    starts, ends, position = [], [], 0
    for word in words:
        starts.append(position)
        ends.append(position + len(word))
        position += len(word) + 1
    text = " ".join(words)
    kwargs = {"truncation": True, "max_length": truncate_to} if truncate_to else {}
    try:
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True, **kwargs)
    except NotImplementedError as err:
        raise TypeError(
            f"{type(tokenizer).__name__} gives no character offsets; word probes need a fast (Rust) tokenizer"
        ) from err
    ids, offsets = list(encoding["input_ids"]), encoding["offset_mapping"]
    tokens: list[list[int]] = [[] for _ in words]
    content = []  # positions of tokens that cover text (special tokens have empty offsets)
    for t, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        content.append(t)
        j = bisect.bisect_right(ends, s)  # first word ending after the token starts
        while j < len(words) and starts[j] < e:
            tokens[j].append(t)
            j += 1
    missing = 0
    for j, found in enumerate(tokens):
        if not found and content:
            # The tokenizer's normaliser dropped the word's characters; borrow the next token.
            later = [t for t in content if offsets[t][0] >= starts[j]]
            found.append(later[0] if later else content[-1])
            missing += 1
    if not content:
        raise ValueError(f"The tokenizer produced no tokens for the sentence {text[:80]!r}")
    return ids, tokens, missing


def _pieces(tokenizer, sentence: int, words: Sequence[str], max_length: int, pooling: str, n_special: int,
            stats: dict) -> list[Piece]:
    pick = {"first": lambda ts: ts[:1], "last": lambda ts: ts[-1:], "mean": lambda ts: ts}[pooling]
    pieces = []
    todo = [(0, list(words))]  # a stack, so chunks come out in reading order
    while todo:
        first_word, chunk = todo.pop()
        ids, tokens, missing = _word_tokens(tokenizer, chunk)
        if len(ids) > max_length:
            stats["long"].add(sentence)
            if len(chunk) > 1:
                # Cut after the longest prefix of words that fits; each side is then tokenized
                # again as a text of its own, and cut again if still too long.
                budget, k = max_length - n_special, 1
                while k < len(chunk) - 1 and tokens[k][-1] - tokens[0][0] + 1 <= budget:
                    k += 1
                todo.append((first_word + k, chunk[k:]))
                todo.append((first_word, chunk[:k]))
                continue
            ids, tokens, missing = _word_tokens(tokenizer, chunk, truncate_to=max_length)
            tokens = [found or [len(ids) - 1] for found in tokens]
        stats["missing"] += missing
        pairs = [(t, j) for j, ts in enumerate(tokens) for t in pick(ts)]
        pieces.append(Piece(sentence, first_word, ids, pairs))
    return pieces


def plan_pieces(tokenizer, sentences: Sequence[Sequence[str]], max_length: int, pooling: str = "first") -> list[Piece]:
    """Tokenize every sentence; sentences over ``max_length`` tokens are split into chunks (one warning)."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown word pooling {pooling!r}; expected one of {POOLINGS}")
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    if n_special >= max_length:
        raise ValueError(f"max_length={max_length} leaves no room next to {n_special} special tokens")
    stats = {"long": set(), "missing": 0}
    pieces = []
    for i, words in enumerate(sentences):
        if not words:
            raise ValueError(f"Sentence {i} has no words")
        pieces.extend(_pieces(tokenizer, i, words, max_length, pooling, n_special, stats))
    if stats["long"]:
        warnings.warn(f"{len(stats['long'])} sentence(s) longer than max_length={max_length} tokens were split "
                      "into chunks encoded separately", stacklevel=2)
    if stats["missing"]:
        warnings.warn(f"{stats['missing']} word(s) produced no sub-token of their own (the tokenizer normalised "
                      "their characters away); they take the following token's vector", stacklevel=2)
    return pieces


# ---------------------------------------------------------------------- extraction
def default_max_length(encoder_or_tokenizer) -> int:
    value = getattr(encoder_or_tokenizer, "max_length", None)
    if isinstance(value, int) and value > 1:
        return value
    value = getattr(encoder_or_tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 1 < value <= 8192 else 512


@torch.inference_mode()
def _forward_batch(model, batch: list[Piece], layers: list[int], num_layers: int, pad_id: int,
                   device: torch.device, rows: list[np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
    width = max(len(p.input_ids) for p in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    flat_index, word_index, out_rows = [], [], []
    for b, piece in enumerate(batch):
        n = len(piece.input_ids)
        input_ids[b, :n] = torch.tensor(piece.input_ids)
        attention_mask[b, :n] = 1
        base = len(out_rows)
        n_words = max(j for _, j in piece.token_words) + 1
        out_rows.extend(rows[piece.sentence][piece.first_word:piece.first_word + n_words])
        for t, j in piece.token_words:
            flat_index.append(b * width + t)
            word_index.append(base + j)
    output = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                   output_hidden_states=True)
    states = output.hidden_states
    if states is None or len(states) != num_layers + 1:
        got = "none" if states is None else len(states)
        raise RuntimeError(f"Expected {num_layers + 1} hidden states (embeddings + {num_layers} layers), got {got}")
    flat_index_t = torch.tensor(flat_index, device=device)
    word_index_t = torch.tensor(word_index, device=device)
    counts = torch.zeros(len(out_rows), device=device).index_add_(
        0, word_index_t, torch.ones(len(word_index), device=device))
    pooled = []
    for layer in layers:
        hidden = states[layer].reshape(-1, states[layer].shape[-1])[flat_index_t].float()
        sums = torch.zeros(len(out_rows), hidden.shape[-1], device=device).index_add_(0, word_index_t, hidden)
        pooled.append(sums / counts[:, None])
    return torch.stack(pooled).cpu(), np.asarray(out_rows)


def extract_word_features(model: torch.nn.Module, tokenizer, sentences: Sequence[Sequence[str]], layers: Sequence[int],
                          *, pooling: str = "first", batch_size: int = 16, max_length: int = 512,
                          device: str | torch.device | None = None, out: np.ndarray | None = None,
                          show_progress: bool = False) -> np.ndarray:
    """Word vectors of ``sentences`` at ``layers`` (resolved numbers), shaped (len(layers), n_words, hidden).

    Words are numbered in reading order over all sentences. ``device`` None: CUDA when present
    (the model is moved there, as ``LLM2Vec.encode`` does), else where the model is. ``out`` may be a
    preallocated (e.g. memory-mapped) float32 array of that shape.
    """
    check_positive_int("batch_size", batch_size)
    num_layers = num_hidden_layers(model)
    layers = list(layers)
    if not layers or any(not 0 <= layer <= num_layers for layer in layers):
        raise ValueError(f"layers {layers} must be non-empty and within 0..{num_layers}")
    size = hidden_size(model)
    pieces = plan_pieces(tokenizer, sentences, max_length, pooling)
    offsets = np.cumsum([0] + [len(s) for s in sentences])
    rows = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sentences))]
    n_words = int(offsets[-1])
    if out is None:
        out = np.empty((len(layers), n_words, size), dtype=np.float32)
    elif out.shape != (len(layers), n_words, size):
        raise ValueError(f"out has shape {out.shape}, expected {(len(layers), n_words, size)}")

    current = next(model.parameters()).device
    if getattr(model, "hf_device_map", None) and len(set(model.hf_device_map.values())) > 1:
        device = current  # spread over devices by accelerate: feed the first, move nothing
    elif device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else current
    device = torch.device(device)
    if current != device:
        model.to(device)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = pad_id if pad_id is not None else 0  # masked out, so any valid id works
    was_training = model.training
    model.eval()
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i].input_ids))  # less padding
    written = np.zeros(n_words, dtype=bool)
    try:
        with tqdm(total=len(pieces), desc="Word features", unit="seq", disable=not show_progress) as bar:
            def run(batch: list[int]) -> None:
                chosen = [pieces[i] for i in batch]
                vectors, batch_rows = _forward_batch(model, chosen, layers, num_layers, pad_id, device, rows)
                if not torch.isfinite(vectors).all():
                    raise FloatingPointError(
                        "The model produced non-finite hidden states; this usually means fp16 overflow or broken "
                        "weights - load it in float32 or bfloat16")
                out[:, batch_rows] = vectors.numpy()
                written[batch_rows] = True
                bar.update(len(batch))

            batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
            run_splitting_on_oom(batches, run, _halves)
    finally:
        model.train(was_training)
    if not written.all():  # every word belongs to a piece; a gap would be a bug here, not bad input
        raise RuntimeError(f"{int((~written).sum())} words got no vector")
    return out


def _halves(batch: list[int]) -> tuple[list[int], ...]:
    half = len(batch) // 2
    return (batch[:half], batch[half:]) if half else ()


# ---------------------------------------------------------------------- cache
def _fingerprint(model: torch.nn.Module) -> str:
    """A cheap hash of a strided sample of every weight: same name but other weights means another cache entry."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            if param.device.type == "meta":
                continue
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
            digest.update(sample.tobytes())
    return digest.hexdigest()


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _is_bidirectional(model) -> bool:
    from l2v_core.bidirectional import is_bidirectional

    return is_bidirectional(model)


def cache_key(model, tokenizer, *, model_name: str, model_revision: str | None, data_sha256: str, pooling: str,
              max_length: int) -> dict:
    return {
        "format": CACHE_FORMAT,
        "model": model_name,
        "revision": model_revision,
        "weights": _fingerprint(model),
        "bidirectional": _is_bidirectional(model),
        "tokenizer": _tokenizer_fingerprint(tokenizer),
        "data_sha256": data_sha256,
        "pooling": pooling,
        "max_length": max_length,
    }


@dataclass
class WordFeatures:
    array: np.ndarray
    """(len(layers), n_words, hidden) float32, possibly memory-mapped from the cache."""
    layers: tuple[int, ...]
    from_cache: bool
    seconds: float
    """Time spent computing (0 when loaded from the cache)."""
    path: Path | None = None

    @property
    def n_words(self) -> int:
        return self.array.shape[1]

    def layer(self, layer: int) -> np.ndarray:
        if layer not in self.layers:
            raise KeyError(f"Layer {layer} was not extracted (have {list(self.layers)})")
        return np.array(self.array[self.layers.index(layer)], dtype=np.float32)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")).strip("._")[-80:] or "model"


def _load_cached(folder: Path, key: dict) -> tuple[np.ndarray, list[int]] | None:
    meta_path, array_path = folder / "meta.json", folder / "features.npy"
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    layers = meta.get("layers")
    if meta.get("key") != key or not isinstance(layers, list) or array.shape[0] != len(layers) \
            or array.shape[1] != meta.get("n_words") or array.dtype != np.float32:
        return None  # stale, foreign or half-replaced entry: recompute
    return array, layers


_MEMORY: dict[str, WordFeatures] = {}


def word_features(model, tokenizer, sentences: Sequence[Sequence[str]], *, layers: Sequence[int], data_sha256: str,
                  model_name: str, model_revision: str | None, pooling: str = "first", batch_size: int = 16,
                  max_length: int = 512, cache_dir: os.PathLike | str | None = None,
                  device: str | torch.device | None = None, show_progress: bool = False) -> WordFeatures:
    """Word vectors for every layer in ``layers``, from the cache when it holds them.

    The cache entry (``cache_dir/word-features/<model>/<key>/``) is keyed by model name, revision,
    a weight sample, attention direction, tokenizer, the data file's SHA-256, pooling and
    max_length. Asking for layers the entry lacks recomputes the union, so later calls hit.
    Without ``cache_dir`` the last result is kept in memory only.
    """
    key = cache_key(model, tokenizer, model_name=model_name, model_revision=model_revision,
                    data_sha256=data_sha256, pooling=pooling, max_length=max_length)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    wanted = set(layers)
    if cache_dir is None:
        hit = _MEMORY.get(digest)
        if hit is not None and wanted <= set(hit.layers):
            return WordFeatures(hit.array, hit.layers, True, 0.0)
        start = time.perf_counter()
        array = extract_word_features(model, tokenizer, sentences, sorted(wanted), pooling=pooling,
                                      batch_size=batch_size, max_length=max_length, device=device,
                                      show_progress=show_progress)
        result = WordFeatures(array, tuple(sorted(wanted)), False, time.perf_counter() - start)
        _MEMORY.clear()
        _MEMORY[digest] = result
        return result

    folder = Path(cache_dir) / "word-features" / _slug(model_name) / digest
    cached = _load_cached(folder, key)
    if cached is not None and wanted <= set(cached[1]):
        logger.info("Word features from cache %s", folder)
        return WordFeatures(cached[0], tuple(cached[1]), True, 0.0, folder / "features.npy")
    all_layers = sorted(wanted | set(cached[1] if cached else ()))
    del cached  # release the memory map before the file is replaced
    folder.mkdir(parents=True, exist_ok=True)
    n_words = sum(len(s) for s in sentences)
    hidden = hidden_size(model)
    final = folder / "features.npy"
    start = time.perf_counter()

    def fill(tmp: str) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(all_layers), n_words, hidden))
        extract_word_features(model, tokenizer, sentences, all_layers, pooling=pooling, batch_size=batch_size,
                              max_length=max_length, device=device, out=out, show_progress=show_progress)
        out.flush()

    atomic_write(final, fill)
    seconds = time.perf_counter() - start
    write_json(folder / "meta.json", {"key": key, "layers": all_layers, "n_words": n_words, "hidden_size": hidden,
                                        "seconds": seconds}, indent=1)
    return WordFeatures(np.load(final, mmap_mode="r"), tuple(all_layers), False, seconds, final)
