"""The Hugging Face Hub side of loading: a hub id becomes a local snapshot folder.

Everything goes through ``huggingface_hub.snapshot_download``, so the usual settings apply
(``HF_HOME`` / ``cache_dir``, ``HF_TOKEN`` / ``token``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` /
``local_files_only``) and a model downloaded once is read from the cache afterwards. Only the
files a loader reads are fetched: configs, tokenizer files and one weight format (safetensors,
else ``.bin``), never code (``auto_map`` modules are not downloaded, let alone run).

Failures become one of three errors, each naming the repository and what to do:
:class:`~l2v_core.errors.NotOnHubError` (no such repository or revision, or private / gated),
:class:`~l2v_core.errors.NotCachedError` (offline and not in the cache) and
:class:`~l2v_core.errors.HubUnreachableError` (online, but the Hub cannot be reached and the
files are not cached).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import HubUnreachableError, ModelLoadError, NotCachedError, NotOnHubError, first_line

METADATA_PATTERNS = ["*.json", "*.model", "*.tiktoken", "tokenizer*", "vocab.txt", "merges.txt"]
SAFETENSORS_PATTERNS = ["model.safetensors", "model-*-of-*.safetensors", "adapter_model.safetensors",
                        "*/model.safetensors"]
PICKLE_PATTERNS = ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "adapter_model.bin", "*/pytorch_model.bin"]
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SNAPSHOT = re.compile(r"(?:^|[\\/])models--(?P<org>[^\\/]+?)(?:--(?P<name>[^\\/]+))?[\\/]snapshots[\\/](?P<commit>[0-9a-f]{40})(?:[\\/]|$)")


@dataclass(frozen=True)
class HubOptions:
    """The settings of a Hub look-up, as transformers names them."""

    revision: str | None = None
    token: str | bool | None = None
    cache_dir: str | None = None
    local_files_only: bool = False

    KEYS = ("revision", "token", "cache_dir", "local_files_only")

    @classmethod
    def pop(cls, kwargs: dict) -> "HubOptions":
        """Take the Hub settings out of ``from_pretrained``-style keyword arguments."""
        values = {key: kwargs.pop(key) for key in cls.KEYS if key in kwargs}
        if "cache_dir" in values and values["cache_dir"] is not None:
            values["cache_dir"] = os.fspath(values["cache_dir"])
        values["local_files_only"] = bool(values.get("local_files_only") or False)
        return cls(**values)

    def at(self, revision: str | None) -> "HubOptions":
        """The same settings for another repository (its own revision)."""
        return dataclasses.replace(self, revision=revision)

    @property
    def offline(self) -> bool:
        from huggingface_hub import constants

        return self.local_files_only or bool(constants.is_offline_mode())


def looks_like_hub_id(name: str) -> bool:
    """``name`` or ``org/name`` as the Hub spells repository ids, not a filesystem path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def snapshot_of(path: str) -> tuple[str, str] | None:
    """``(repo_id, commit)`` when ``path`` lies in a Hugging Face cache snapshot folder."""
    match = _SNAPSHOT.search(os.path.abspath(path))
    if match is None:
        return None
    repo = match["org"] if match["name"] is None else f"{match['org']}/{match['name']}"
    return repo, match["commit"]


def cache_folder(options: HubOptions) -> str:
    from huggingface_hub import constants

    return options.cache_dir or constants.HF_HUB_CACHE


def download_metadata(repo_id: str, options: HubOptions, what: str = "model") -> str:
    """The snapshot folder of ``repo_id`` holding its configs and tokenizer files (no weights)."""
    return _snapshot(repo_id, options, METADATA_PATTERNS, what, ready=lambda folder: _has(folder, "*.json"))


def download_model(repo_id: str, options: HubOptions, what: str = "model") -> str:
    """The snapshot folder of ``repo_id`` with configs, tokenizer and weights (or adapter weights):
    safetensors when the repository has them, else the ``.bin`` files."""
    def has(patterns):
        return lambda folder: any(_has(folder, p) for p in patterns)

    folder = _snapshot(repo_id, options, METADATA_PATTERNS + SAFETENSORS_PATTERNS, what,
                       ready=has(SAFETENSORS_PATTERNS))
    if not has(SAFETENSORS_PATTERNS)(folder):
        commit = os.path.basename(folder)  # the same commit, without resolving the revision again
        folder = _snapshot(repo_id, options.at(commit), METADATA_PATTERNS + PICKLE_PATTERNS, what,
                           shown_revision=options.revision, ready=has(PICKLE_PATTERNS))
    return folder


def _has(folder: str, pattern: str) -> bool:
    import fnmatch

    for root, _, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        for name in files:
            if fnmatch.fnmatch(name if rel == "." else f"{rel}/{name}", pattern):
                return True
    return False


def _snapshot(repo_id: str, options: HubOptions, patterns: list[str], what: str,
              shown_revision: str | None = None, ready=None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not options.local_files_only and ready is not None and _COMMIT.fullmatch(options.revision or ""):
        # A commit never changes: when the cache has what is needed, no request is made (a Hub out of
        # reach would otherwise cost huggingface_hub's retries on every call).
        try:
            folder = snapshot_download(repo_id, revision=options.revision, cache_dir=options.cache_dir,
                                       local_files_only=True, allow_patterns=patterns)
            if ready(folder):
                return folder
        except LocalEntryNotFoundError:
            pass
    try:
        return snapshot_download(repo_id, revision=options.revision, cache_dir=options.cache_dir,
                                 token=options.token, local_files_only=options.local_files_only,
                                 allow_patterns=patterns)
    except Exception as err:  # huggingface_hub's errors are mapped below; anything else passes through
        explained = explain(err, repo_id, dataclasses.replace(options, revision=shown_revision or options.revision), what)
        if explained is None:
            raise
        raise explained from err


def explain(err: BaseException, repo_id: str, options: HubOptions, what: str = "model") -> ModelLoadError | None:
    """One-line error for a failed Hub look-up of ``repo_id``, or None when ``err`` is not a Hub error."""
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, IncompleteSnapshotError,
                                        LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    at = f" (revision {options.revision})" if options.revision else ""
    name = f"{what} {repo_id!r}{at}"
    if isinstance(err, GatedRepoError):
        return NotOnHubError(f"The {name} is a gated repository on the Hugging Face Hub: accept its terms on "
                             f"https://huggingface.co/{repo_id} and log in (`hf auth login`, or set HF_TOKEN)")
    if isinstance(err, RepositoryNotFoundError):
        return NotOnHubError(f"{repo_id!r} is not a local path and no repository of that name exists on the Hugging "
                             f"Face Hub (or it is private: log in with `hf auth login` or set HF_TOKEN); check the "
                             f"spelling of the {what}")
    if isinstance(err, RevisionNotFoundError):
        return NotOnHubError(f"Revision {options.revision!r} does not exist in the {what} repository {repo_id!r} on the "
                             "Hugging Face Hub; give an existing branch, tag or commit")
    if isinstance(err, HFValidationError):
        return ModelLoadError(f"{repo_id!r} is neither an existing local path nor a valid Hugging Face Hub id: {err}")
    if isinstance(err, IncompleteSnapshotError):
        return HubUnreachableError(f"The cached copy of the {name} is incomplete and the Hub cannot be reached; "
                                   f"complete it with `hf download {repo_id}` on a connected machine")
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        cache = cache_folder(options)
        if options.offline or isinstance(err, OfflineModeIsEnabled) or isinstance(err.__cause__, OfflineModeIsEnabled):
            switch = "local_files_only=True" if options.local_files_only else "HF_HUB_OFFLINE=1 or --offline"
            return NotCachedError(f"The {name} is not a local path and is not in the local Hugging Face cache ({cache}), "
                                  f"and offline mode is on ({switch}); download it on a connected machine with "
                                  f"`hf download {repo_id}` (into HF_HOME), or go online")
        cause = err.__cause__ or err
        return HubUnreachableError(f"The Hugging Face Hub could not be reached ({type(cause).__name__}: "
                                   f"{first_line(cause)}) and the {name} is not in the local cache ({cache}); "
                                   "check the network / proxy / HF_ENDPOINT, or download it on a connected machine "
                                   f"(`hf download {repo_id}`) and set HF_HUB_OFFLINE=1")
    if isinstance(err, HfHubHTTPError):
        return HubUnreachableError(f"The Hugging Face Hub refused the request for the {name}: {first_line(err)}")
    return None


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """Offline mode for this process's own library calls (huggingface_hub, transformers, datasets),
    restored on exit. ``os.environ`` is left alone, so nothing leaks to the user's shell or to
    other programs."""
    from huggingface_hub import constants

    saved: list[tuple[object, str, object]] = [(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)]
    try:
        import datasets.config  # noqa: F401  (datasets keeps its own copy of the switch)
    except ImportError:  # l2v_core alone does not need datasets
        pass
    config = sys.modules.get("datasets.config")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if config is not None and hasattr(config, name):
            saved.append((config, name, getattr(config, name)))
    for module, name, _ in saved:
        setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
