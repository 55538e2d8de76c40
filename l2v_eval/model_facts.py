"""A model's facts for mteb's ``ModelMeta`` (parameters, embedding dimension, token limit, weight memory,
base model, adapters), so every result l2v-eval writes (``model_meta.json``) and the leaderboard carry them.

Before loading, they are read from files where that is cheap: ``config.json`` (hidden size),
``llm2vec_config.json`` / ``sentence_bert_config.json`` (token limit) and the headers of ``.safetensors``
files (tensor shapes and dtypes; no weights are read). Once the model is loaded, the loaded weights give
the exact numbers (a GGUF file, a Hub model, adapters included).
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MB = 1024 ** 2
# Bytes per element of the safetensors dtypes a model's weights use.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# The language-model head of a causal LM's checkpoint: the encoder loads the model without it.
HEAD_PREFIXES = ("lm_head.", "model.lm_head.")


def safetensors_sizes(folder: str | Path) -> tuple[int, int] | None:
    """(parameters, bytes) the encoder loads from the ``*.safetensors`` files in ``folder`` (the LM head
    left out), from their headers only."""
    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        return None
    count = size = 0
    for file in files:
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
        except (OSError, ValueError, struct.error) as err:
            logger.debug("Cannot read the header of %s: %s", file, err)
            return None
        for name, entry in header.items():
            if name == "__metadata__" or name.startswith(HEAD_PREFIXES):
                continue
            n = 1
            for dim in entry["shape"]:
                n *= dim
            count += n
            size += n * _DTYPE_BYTES.get(entry["dtype"], 4)
    return count, size


def file_facts(base: str, adapters: list[str], max_length: int | None) -> dict[str, Any]:
    """What the files of a model directory (and its adapter directories) tell without loading weights."""
    folder = Path(base)
    facts: dict[str, Any] = {}
    if folder.is_dir():
        hidden = _read_json(folder / "config.json").get("hidden_size")
        if isinstance(hidden, int):
            facts["embed_dim"] = hidden
        limit = (_read_json(folder / "llm2vec_config.json").get("max_length")
                 or _read_json(folder / "sentence_bert_config.json").get("max_seq_length"))
        if isinstance(limit, int):
            facts["max_tokens"] = limit
        sizes = [safetensors_sizes(folder), *(safetensors_sizes(a) for a in adapters)]
        if sizes[0] is not None and all(s is not None for s in sizes):
            facts["n_parameters"] = sum(s[0] for s in sizes)
            facts["memory_usage_mb"] = round(sum(s[1] for s in sizes) / MB, 1)
    if max_length is not None:
        facts["max_tokens"] = max_length
    return facts


def loaded_facts(model) -> dict[str, Any]:
    """The same facts from a loaded ``l2v_core.LLM2Vec`` or ``SentenceTransformer`` (none from an object
    that is neither, e.g. a wrapper: the file facts then stand)."""
    if not callable(getattr(model, "parameters", None)):
        return {}
    params = list(model.parameters())
    facts: dict[str, Any] = {
        "n_parameters": sum(p.numel() for p in params),
        "memory_usage_mb": round(sum(p.numel() * p.element_size() for p in params) / MB, 1),
    }
    if hasattr(model, "hidden_size"):  # LLM2Vec
        facts.update(embed_dim=model.hidden_size, max_tokens=model.max_length)
    else:
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
        facts.update(embed_dim=dim, max_tokens=getattr(model, "max_seq_length", None))
    return {k: v for k, v in facts.items() if v is not None}


def lineage(base_name: str, base_local: str, adapters: list[str]) -> dict[str, Any]:
    """``adapted_from`` (the model this one was converted or trained from: the name a local directory's
    config records, or the base an adapter-only directory names, or the base given with adapters) and
    ``loader_kwargs`` naming the base and the adapters, as mteb's own LLM2Vec entries do."""
    folder = Path(base_local)
    adapters = list(adapters)
    recorded = _read_json(folder / "config.json").get("_name_or_path") if folder.is_dir() else None
    adapter_base = None
    if folder.is_dir() and not (folder / "config.json").is_file():
        adapter_base = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    if isinstance(adapter_base, str) and adapter_base:  # an adapter-only directory (bundled-l2v, MNTP repos)
        base, adapters = adapter_base, [base_name, *adapters]
    else:
        base = base_name
    kwargs: dict[str, Any] = {"base_model_name_or_path": base}
    if adapters:
        kwargs["peft_model_name_or_path"] = adapters
    if isinstance(recorded, str) and recorded and recorded not in (base_local, base_name):
        adapted_from = recorded
    else:
        adapted_from = base if adapters else None
    return {"adapted_from": adapted_from, "loader_kwargs": kwargs}


# ModelMeta fields the leaderboard shows, with their column names.
LEADERBOARD_FIELDS = {"n_parameters": "n_parameters", "embed_dim": "embed_dim", "max_tokens": "max_tokens",
                      "memory_usage_mb": "memory_mb", "adapted_from": "base_model"}


def results_meta(suite_dir: str | Path) -> list[dict[str, Any]]:
    """The ``model_meta.json`` files l2v-eval (through mteb) wrote under ``suite_dir/mteb/results``, one row
    per model, revision and experiment: ``model``, ``model_revision``, ``experiment`` and
    :data:`LEADERBOARD_FIELDS`."""
    rows = []
    for file in sorted(Path(suite_dir, "mteb", "results").glob("*/*/**/model_meta.json")):
        meta = _read_json(file)
        if not meta.get("name"):
            continue
        parts = file.parent.parts
        experiment = parts[-1] if len(parts) >= 2 and parts[-2] == "experiments" else ""
        row = {"model": meta["name"], "model_revision": meta.get("revision") or "", "experiment": experiment}
        row.update({column: meta.get(name) for name, column in LEADERBOARD_FIELDS.items()})
        rows.append(row)
    return rows
