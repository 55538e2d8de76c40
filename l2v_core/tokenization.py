"""Texts and [instruction, text] pairs → token ids + pooling masks.

The composition of a text follows the reference llm2vec exactly (so vectors
match it): the instruction is stripped and joined to the text with one space,
known instruct models get their chat wrapper, ``eos_token`` pooling appends an
end-of-sequence marker, and documents longer than ``doc_max_length`` tokens are
cut word-wise (by tokens where a text has no spaces to cut at, so no text is ever
cut to nothing). Unlike the reference, the boundary between instruction and text
is a character offset carried through one batched fast-tokenizer call, so the
pooling mask never depends on re-tokenizing a fragment.
"""
from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# The reference's separator between instruction and text in its string-based API.
REFERENCE_SEPARATOR = "!@#$%^&*()"
# Half of a UTF-16 pair on its own: Python strings can hold one, tokenizers cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Chat wrappers the reference applies to these instruct models: (prefix, suffix, skips_eos_suffix).
CHAT_TEMPLATES: dict[str, tuple[str, str, bool]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>", True),
    "mistralai/Mistral-7B-Instruct-v0.2": ("[INST] ", " [/INST]", False),
    "meta-llama/Llama-2-7b-chat-hf": ("[INST] ", " [/INST]", False),
    "google/gemma-2-9b-it": ("<bos><start_of_turn>user\n", "<end_of_turn>", False),
    "Qwen/Qwen2-1.5B-Instruct": ("<|im_start|>user\n", "<|im_end|>", False),
    "Qwen/Qwen2-7B-Instruct": ("<|im_start|>user\n", "<|im_end|>", False),
}
# End-of-sequence text the reference appends for ``eos_token`` pooling, by model name then config class.
EOS_SUFFIX_BY_NAME = {"meta-llama/Meta-Llama-3-8B": "<|end_of_text|>"}
EOS_SUFFIX_BY_CONFIG = {"LlamaConfig": " </s>", "MistralConfig": " </s>", "GemmaConfig": "<eos>", "Qwen2Config": "<|endoftext|>"}


@dataclass(frozen=True)
class Composition:
    """How a model's inputs are written: the name templates are keyed on, the config class, the pooling."""

    name_or_path: str
    config_class: str
    pooling_mode: str
    eos_token: str | None

    def eos_suffix(self) -> str | None:
        if self.pooling_mode != "eos_token":
            return None
        if self.name_or_path in EOS_SUFFIX_BY_NAME:
            return EOS_SUFFIX_BY_NAME[self.name_or_path]
        if self.config_class in EOS_SUFFIX_BY_CONFIG:
            return EOS_SUFFIX_BY_CONFIG[self.config_class]
        return self.eos_token  # architectures the reference never supported: the tokenizer's own EOS


@dataclass
class Tokenized:
    """Unpadded token ids of each input with a mask of the tokens to pool over."""

    input_ids: list[list[int]]
    pool_mask: list[list[bool]]
    truncated: list[bool]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def validate_inputs(sentences) -> list[tuple[str, str]]:
    """Normalize inputs to (instruction, text) pairs, with an error naming the first bad item.

    Accepts what the reference's ``encode`` accepts: a string, a list of strings, a list of
    ``[instruction, text]`` items (anything after the text is ignored, as in MEDI-style
    ``[instruction, text, 0]`` triples), and one ``[instruction, text, int]`` item on its own.
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    if sentences is None or isinstance(sentences, (bytes, Mapping)) or not _is_sequence_like(sentences):
        raise TypeError(f"sentences must be a string or a list of strings / [instruction, text] pairs, got {type(sentences).__name__}")
    items = list(sentences)
    if items and isinstance(items[0], str) and isinstance(items[-1], int):
        items = [items]  # the reference's single [instruction, text, id] item
    pairs = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            instruction, text = "", item
        elif not isinstance(item, (bytes, Mapping)) and _is_sequence_like(item) and len(item) >= 2:
            instruction, text = item[0], item[1]
            if not isinstance(instruction, str):
                raise TypeError(f"sentences[{i}]: the instruction must be a string, got {type(instruction).__name__}")
        else:
            raise TypeError(
                f"sentences[{i}] must be a string or an [instruction, text, ...] list, got {type(item).__name__}: {item!r:.80}"
            )
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}]: the text must be a string, got {type(text).__name__}")
        if text == "":
            raise ValueError(f"sentences[{i}] is an empty string; there is nothing to embed")
        for part, value in (("instruction", instruction), ("text", text)):
            bad = _SURROGATE.search(value)
            if bad:
                raise ValueError(
                    f"sentences[{i}]: the {part} holds a lone surrogate (U+{ord(bad.group()):04X} at character "
                    f"{bad.start()}), which is not valid Unicode; decode the source text with errors='replace'"
                )
        pairs.append((str(instruction), str(text)))
    return pairs


def _is_sequence_like(value) -> bool:
    """Lists, tuples, numpy arrays, datasets columns: anything with a length and positions."""
    return isinstance(value, Sequence) or (hasattr(value, "__len__") and hasattr(value, "__getitem__"))


def compose(instruction: str, text: str, how: Composition) -> tuple[str, int, int]:
    """The string fed to the tokenizer, where its pooled part starts, and where the text proper ends.

    The reference joins ``instruction.strip() + " " + SEPARATOR + text`` and calls ``.strip()`` on
    that whole string before wrapping it; since the separator (or the instruction) leads, only the
    end of the text is ever stripped.
    """
    head = f"{instruction.strip()} " if instruction else ""
    template = CHAT_TEMPLATES.get(how.name_or_path)
    eos = how.eos_suffix()
    if template:
        body = text.rstrip()
        string = template[0] + head + body + template[1]
        start = len(template[0]) + len(head)
        if eos and not template[2]:
            string = string.rstrip() + eos
        return string, start, start + len(body)
    if eos:
        body = text.rstrip()
        return head + body + eos, len(head), len(head) + len(body)
    return head + text, len(head), len(head) + len(text)


def cut_to_doc_max_length(text: str, tokenizer, doc_max_length: int, max_length: int) -> str:
    """Cut a document until it has at most ``doc_max_length`` tokens, never to nothing.

    Word-wise as the reference (keep the first ``words * doc_max_length / tokens`` words, repeat);
    where that would keep no word at all (text without spaces: CJK, base64, URLs, one huge word)
    the text is cut by tokens instead, at a character boundary.
    """
    def count(t: str) -> int:
        return len(tokenizer(t, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"])

    n = count(text)
    while n > doc_max_length:
        words = text.split()
        keep = int(len(words) * doc_max_length / n)
        if keep == 0:
            return _cut_by_tokens(text, tokenizer, doc_max_length)
        text = " ".join(words[:keep])
        n = count(text)
    return text


def _cut_by_tokens(text: str, tokenizer, doc_max_length: int) -> str:
    """The longest prefix of ``text`` that ends where a token ends within the first ``doc_max_length``
    tokens; at least the first token's characters, so something of the text always remains."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, truncation=True, max_length=doc_max_length + 1,
                            return_offsets_mapping=True)["offset_mapping"]
        offsets = [(s, e) for s, e in offsets if e > s]
        if len(offsets) <= doc_max_length:
            return text
        # Cut where the first dropped token starts; one character split over several tokens (byte-level
        # BPE on CJK) shares its offsets, so the cut never lands inside a character.
        end = offsets[doc_max_length][0]
        return text[:end] if end > 0 else text[:offsets[0][1]]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    cut = tokenizer.decode(ids[:max(doc_max_length, 1)], skip_special_tokens=True).rstrip("\ufffd")  # no half character
    return cut if cut.strip() else text[:1]


def tokenize(pairs: list[tuple[str, str]], tokenizer, how: Composition, *, max_length: int,
             doc_max_length: int | None, skip_instruction: bool) -> Tokenized:
    """Tokenize all inputs in one batched call and mark the tokens to pool over."""
    if not getattr(tokenizer, "is_fast", False):
        return _tokenize_without_offsets(pairs, tokenizer, how, max_length=max_length,
                                         doc_max_length=doc_max_length, skip_instruction=skip_instruction)
    composed = [compose(ins, text, how) for ins, text in pairs]
    enc = _call(tokenizer, [c[0] for c in composed], max_length)
    text_counts = [_count_between(offsets, start, end) for offsets, (_, start, end) in zip(enc["offset_mapping"], composed)]

    redo = [i for i, n in enumerate(text_counts) if doc_max_length is not None and n > doc_max_length]
    if redo:
        for i in redo:
            instruction, text = pairs[i]
            composed[i] = compose(instruction, cut_to_doc_max_length(text, tokenizer, doc_max_length, max_length), how)
        again = _call(tokenizer, [composed[i][0] for i in redo], max_length)
        for j, i in enumerate(redo):
            for key in ("input_ids", "offset_mapping"):
                enc[key][i] = again[key][j]

    input_ids, pool_mask, truncated = [], [], []
    for i, (string, body_start, body_end) in enumerate(composed):
        offsets = enc["offset_mapping"][i]
        ids = list(enc["input_ids"][i])
        if skip_instruction:
            # (0, 0) offsets mark tokens the post-processor added (BOS); end > body_start >= 0 leaves them out
            mask = [end > body_start for _, end in offsets]
        else:
            mask = [True] * len(ids)
        last_end = max((end for _, end in offsets), default=0)
        cut_by_max_length = last_end < len(string.rstrip())
        if cut_by_max_length and body_end > body_start and _count_between(offsets, body_start, body_end) == 0:
            _raise_no_room_for_text(i, string[:body_start], tokenizer, max_length)
        truncated.append(i in redo or cut_by_max_length)
        input_ids.append(ids)
        pool_mask.append(mask)
    return Tokenized(input_ids, pool_mask, truncated)


def _raise_no_room_for_text(index: int, head: str, tokenizer, max_length: int) -> None:
    """``head``: the composed string before the text (chat prefix and instruction)."""
    n = len(tokenizer(head, add_special_tokens=True)["input_ids"])
    raise ValueError(f"sentences[{index}]: the instruction takes {n} tokens (with special tokens) of "
                     f"max_length={max_length}, which leaves no room for the text; shorten the instruction "
                     "or raise max_length")


def _call(tokenizer, strings: list[str], max_length: int):
    return tokenizer(strings, add_special_tokens=True, truncation=True, max_length=max_length,
                     return_offsets_mapping=True, return_attention_mask=False)


def _count_between(offsets, start: int, end: int) -> int:
    return sum(1 for s, e in offsets if e > start and s < end and e > s)


def _tokenize_without_offsets(pairs, tokenizer, how, *, max_length, doc_max_length, skip_instruction) -> Tokenized:
    """Slow tokenizers have no offsets: count the pooled part's tokens separately, as the reference does."""
    input_ids, pool_mask, truncated = [], [], []
    for i, (instruction, text) in enumerate(pairs):
        cut = cut_to_doc_max_length(text, tokenizer, doc_max_length, max_length) if doc_max_length else text
        string, body_start, _ = compose(instruction, cut, how)
        ids = tokenizer(string, truncation=True, max_length=max_length)["input_ids"]
        if body_start and cut.strip() and len(tokenizer(string[:body_start])["input_ids"]) >= max_length:
            _raise_no_room_for_text(i, string[:body_start], tokenizer, max_length)
        n_body = len(tokenizer(string[body_start:], add_special_tokens=False)["input_ids"])
        n_body = min(n_body, len(ids))
        mask = [k >= len(ids) - n_body for k in range(len(ids))] if skip_instruction else [True] * len(ids)
        full = len(tokenizer(string)["input_ids"])
        input_ids.append(ids)
        pool_mask.append(mask)
        truncated.append(cut != text or full > len(ids))
    return Tokenized(input_ids, pool_mask, truncated)


def split_reference_string(text: str) -> tuple[str, str]:
    """Accept the reference's ``instruction!@#$%^&*()text`` strings in the training API."""
    parts = text.split(REFERENCE_SEPARATOR)
    if len(parts) == 1:
        return "", text
    return parts[0].rstrip(), "".join(parts[1:])


def warn_truncated(truncated: list[bool], max_length: int, doc_max_length: int | None) -> None:
    n = sum(truncated)
    if n:
        warnings.warn(
            f"{n} input(s) were longer than the limits (doc_max_length={doc_max_length}, max_length={max_length} tokens) "
            "and were truncated",
            stacklevel=3,
        )
