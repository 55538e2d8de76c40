"""The sentence-transformers model level of an l2v directory: its model files, and a safe loader.

A sentence-transformers model is a chain of modules. Each module saves only its own files;
``modules.json`` (the chain) and ``config_sentence_transformers.json`` (prompts, similarity)
belong to the model and are written once, by whoever saves the model: ``SentenceTransformer.save``
when sentence-transformers saves, ``write_sentence_transformers_files`` (from ``LLM2Vec.save`` and
``l2v-convert``) when l2v saves.

``SentenceTransformer(path, trust_remote_code=True)`` imports whatever module class a
directory's ``modules.json`` names, including code files shipped in the directory itself.
``load_sentence_transformer`` reads ``modules.json`` first and loads only chains made of l2v's
own module and sentence-transformers' own modules.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from .files import write_json

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODULE_TYPE = "l2v_core.st_modules.LLM2VecModule"
# Every sentence-transformers module class l2v ships (the ``type`` modules.json gives it).
L2V_MODULE_TYPES = frozenset({MODULE_TYPE})


class UnsafeModelError(ValueError):
    """A sentence-transformers directory names module code that the safe loader does not import."""


def write_sentence_transformers_files(output_path: str | os.PathLike, prompts: dict[str, str] | None = None,
                                      default_prompt_name: str | None = None) -> None:
    """``modules.json`` (one l2v module saved in the root) and ``config_sentence_transformers.json``
    (prompts: named instructions, excluded from pooling)."""
    import sentence_transformers
    import torch
    import transformers

    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    st_config = {
        "model_type": "SentenceTransformer",
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": dict(prompts or {}),
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    }
    for name, data in (("modules.json", modules), ("config_sentence_transformers.json", st_config)):
        write_json(os.path.join(os.fspath(output_path), name), data, indent=2)


def read_prompts(path: str | os.PathLike) -> dict[str, Any]:
    """``{"prompts": ..., "default_prompt_name": ...}`` from a directory's config_sentence_transformers.json
    (empty when it has none), so re-saving an encoder keeps its prompts."""
    file = os.path.join(os.fspath(path), "config_sentence_transformers.json")
    if not os.path.isfile(file):
        return {}
    try:
        with open(file) as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); repair it or delete it to load the encoder") from None
    prompts = config.get("prompts") or {}
    if not prompts:
        return {}
    # sentence-transformers reads a null prompt as the empty one
    return {"prompts": {name: "" if text is None else text for name, text in dict(prompts).items()},
            "default_prompt_name": config.get("default_prompt_name")}


def check_modules_json(path: str | os.PathLike) -> bool:
    """Refuse (``UnsafeModelError`` naming the entry) a ``modules.json`` whose types are not l2v's own
    module or sentence-transformers' own. Returns whether the chain holds an l2v module (which
    sentence-transformers imports only with ``trust_remote_code=True``).

    With that flag set, sentence-transformers also hands it to its other modules, and some of them then
    run code the directory names (``Transformer``: a config's ``auto_map``; ``Dense``: an activation
    function by import path; ``Router``: any module type). So next to an l2v module only modules that
    ignore the flag (``Normalize``) are accepted.
    """
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.util import import_from_string

    file = os.path.join(os.fspath(path), "modules.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{os.fspath(path)!r} has no modules.json: it is not a sentence-transformers directory")
    with open(file) as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UnsafeModelError(f"{file} must hold a list of module entries")
    types = [e.get("type") for e in entries]
    for i, (entry, type_) in enumerate(zip(entries, types)):
        if not isinstance(type_, str):
            raise UnsafeModelError(f"{file}: entry {i} (name {entry.get('name')!r}) has type {type_!r}; a module type "
                                   "must be one import path (a string)")
    has_l2v = any(t in L2V_MODULE_TYPES for t in types)
    for i, (entry, type_) in enumerate(zip(entries, types)):
        where = f"{file}: entry {i} (name {entry.get('name')!r}, type {type_!r})"
        if type_ in L2V_MODULE_TYPES:
            continue
        if not isinstance(type_, str) or not type_.startswith("sentence_transformers."):
            raise UnsafeModelError(f"{where} is neither l2v's module ({', '.join(sorted(L2V_MODULE_TYPES))}) nor a "
                                   "sentence-transformers module; loading it would import code the directory names. "
                                   "Refused: load it with SentenceTransformer(path, trust_remote_code=True) only if "
                                   "you trust that code")
        if has_l2v:
            try:
                module_class = import_from_string(type_)  # inside the installed sentence_transformers package
            except ImportError as err:
                raise UnsafeModelError(f"{where} is not a class of the installed sentence-transformers: {err}") from None
            if not (isinstance(module_class, type) and issubclass(module_class, Normalize)):
                raise UnsafeModelError(f"{where} would be loaded with trust_remote_code=True (which l2v's module "
                                       "needs), and this module then runs code its files name; refused. Only "
                                       "Normalize may follow l2v's module")
    return has_l2v


def load_sentence_transformer(model_name_or_path: str | os.PathLike, **kwargs: Any) -> "SentenceTransformer":
    """``SentenceTransformer`` for an l2v directory (or hub id), without importing code the directory names.

    Example::

        model = load_sentence_transformer("my-encoder")
        queries = model.encode_query(["how do encoders work"])   # with the model's query instruction

    The directory (a hub id is first fetched into, or found in, the Hugging Face cache, with the
    ``token`` / ``revision`` / ``cache_folder`` / ``local_files_only`` given) must pass
    ``check_modules_json``; it is then loaded from that local copy, with ``trust_remote_code=True``
    only when it holds l2v's module. Other keyword arguments go to ``SentenceTransformer``.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import load_dir_path

    if "trust_remote_code" in kwargs:
        raise TypeError("load_sentence_transformer sets trust_remote_code itself (True only for l2v's own module); "
                        "call SentenceTransformer directly to trust other code")
    name = os.fspath(model_name_or_path)
    path = load_dir_path(name, "", token=kwargs.get("token"), cache_folder=kwargs.get("cache_folder"),
                         revision=kwargs.get("revision"), local_files_only=kwargs.get("local_files_only", False))
    if path is None:
        raise FileNotFoundError(f"{name!r} is neither a local directory nor a model on the Hugging Face Hub "
                                "(or in its local cache)")
    trust = check_modules_json(path)
    return SentenceTransformer(path, trust_remote_code=trust, **kwargs)
