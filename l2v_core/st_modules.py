"""sentence-transformers module, so a saved l2v directory loads with ``SentenceTransformer``.

One input module wraps the whole encoder (tokenization with the instruction
mask, the bidirectional decoder, pooling), so ``SentenceTransformer(path)``
produces exactly the vectors of ``LLM2Vec.encode``. ST prompts become l2v
instructions: their tokens are excluded from pooling.

The module follows sentence-transformers' module contract: it is saved in the model's root
(``save_in_root``) and writes only its own files (weights, tokenizer, its config
``llm2vec_config.json`` with ``config_keys``); the model-level files (``modules.json``,
``config_sentence_transformers.json``) belong to whoever saves the model (see ``st_model``).

sentence-transformers 6 imports module classes from outside its own package only with
``trust_remote_code=True``; ``l2v_core.load_sentence_transformer`` checks a directory's
``modules.json`` first, so only this installed class (and sentence-transformers' own) is imported.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

from .encoder import CONFIG_NAME, ENCODER_DEFAULTS, LLM2Vec
from .errors import check_positive_int
from .files import write_json
from .loading import ModelLoadError


class LLM2VecModule(InputModule):
    save_in_root = True
    config_file_name = CONFIG_NAME
    config_keys: list[str] = list(ENCODER_DEFAULTS)

    def __init__(self, encoder: LLM2Vec) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Token limit per text (``LLM2Vec.max_length``); settable, as on sentence-transformers' own modules."""
        return self.encoder.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        check_positive_int("max_seq_length", value)
        self.encoder.max_length = value

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        # An empty text is encoded as one space, as l2v-eval encodes the empty documents of real corpora
        # (LLM2Vec.encode refuses empty strings; sentence-transformers callers, mteb among them, pass them).
        return self.encoder.tokenize([[prompt or "", text or " "] for text in inputs])

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features["sentence_embedding"] = self.encoder.forward(features)
        return features

    def get_embedding_dimension(self) -> int:
        return self.encoder.hidden_size

    get_sentence_embedding_dimension = get_embedding_dimension

    def get_config_dict(self) -> dict[str, Any]:
        return self.encoder.encoder_config()

    def save_config(self, output_path: str, filename: str | None = None) -> None:
        write_json(os.path.join(output_path, filename or self.config_file_name), self.get_config_dict())

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """The module's own files only: weights (or adapter), tokenizer, ``llm2vec_config.json``."""
        self.encoder.save_encoder_files(output_path, save_config=False)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, model_kwargs: dict | None = None, **kwargs) -> "LLM2VecModule":
        # A hub id is fetched (or found in the cache) as sentence-transformers does for its own modules.
        path = cls.load_dir_path(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                 revision=revision, local_files_only=local_files_only)
        if path is None:
            where = os.path.join(model_name_or_path, subfolder) if subfolder else model_name_or_path
            raise ModelLoadError(f"{where!r} is neither a local directory nor a model on the Hugging Face Hub "
                                 "(or in its local cache)")
        return cls(LLM2Vec.from_pretrained(path, **(model_kwargs or {})))
