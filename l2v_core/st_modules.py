"""sentence-transformers module, so a saved l2v directory loads with ``SentenceTransformer``.

One input module wraps the whole encoder (tokenization with the instruction
mask, the bidirectional decoder, pooling), so ``SentenceTransformer(path)``
produces exactly the vectors of ``LLM2Vec.encode``. ST prompts become l2v
instructions: their tokens are excluded from pooling.

sentence-transformers 6 imports module classes from outside its own package
only with ``trust_remote_code=True``; the class lives in this installed
package (no code is fetched from the model directory).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

from .files import write_json

MODULE_TYPE = "l2v_core.st_modules.LLM2VecModule"


class LLM2VecModule(InputModule):
    save_in_root = True
    config_keys: list[str] = []

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.encoder.max_length

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, torch.Tensor]:
        return self.encoder.tokenize([[prompt or "", text] for text in inputs])

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features["sentence_embedding"] = self.encoder.forward(features)
        return features

    def get_embedding_dimension(self) -> int:
        return self.encoder.hidden_size

    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.encoder.save(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, model_kwargs: dict | None = None, **kwargs) -> "LLM2VecModule":
        from .encoder import LLM2Vec

        path = os.path.join(model_name_or_path, subfolder) if subfolder else model_name_or_path
        return cls(LLM2Vec.from_pretrained(path, **(model_kwargs or {})))


def write_sentence_transformers_files(output_path: str, prompts: dict[str, str] | None = None,
                                      default_prompt_name: str | None = None) -> None:
    """``modules.json`` and ``config_sentence_transformers.json`` (prompts → instructions)."""
    import sentence_transformers
    import transformers

    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    st_config = {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": dict(prompts or {}),
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    }
    for name, data in (("modules.json", modules), ("config_sentence_transformers.json", st_config)):
        write_json(os.path.join(output_path, name), data, indent=2)
