"""Errors of model loading; each message is one line naming the item and what to do."""
from __future__ import annotations

import numbers


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


def check_positive_int(name: str, value, none_means: str | None = None, error: type[Exception] = ValueError) -> None:
    """``error`` with one line naming ``name`` unless ``value`` is a positive integer (a bool is not one);
    with ``none_means``, None is allowed too and the message says what it means."""
    if value is None and none_means is not None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = f" or None ({none_means})" if none_means is not None else ""
        raise error(f"{name} must be a positive integer{allowed}, got {value!r}")


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type where it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
