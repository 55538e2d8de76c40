"""Errors of model loading; each message is one line naming the item and what to do."""
from __future__ import annotations


class ModelLoadError(OSError):
    """A model, tokenizer or adapter could not be loaded; the message says why and what to do."""


class AdapterError(ModelLoadError, ValueError):
    """A peft adapter is missing, corrupt, or does not fit the base model."""


class HubUnreachableError(ModelLoadError):
    """The Hugging Face Hub could not be reached and the files are not in the local cache."""


class NotCachedError(ModelLoadError):
    """Offline mode is on and the files are not in the local Hugging Face cache."""


class NotOnHubError(ModelLoadError):
    """The repository or revision does not exist on the Hub (or is private / gated)."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type where it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
