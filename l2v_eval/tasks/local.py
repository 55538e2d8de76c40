"""Task data from local copies before the Hugging Face Hub.

mteb tasks fetch their data with ``datasets.load_dataset(path, name, split=..., revision=...)``
(retrieval tasks first list configs and splits), from many modules: the task base classes
and tasks with their own loaders. Inside :func:`dataset_source` each of those calls
first looks under ``--data-dir``::

    DATA_DIR/<org>__<dataset>/<config or "default">/<split>/   (a Dataset saved with save_to_disk)
    DATA_DIR/<org>__<dataset>/<config or "default">/           (a DatasetDict saved with save_to_disk)

and otherwise falls through to ``load_dataset`` with ``DATA_DIR`` as its cache (so a copied
Hugging Face datasets cache works too), which downloads what is missing unless offline mode is
on. When the data cannot be had, the call raises :class:`MissingDatasetError`, whose message
tells apart a dataset that does not exist, one that is not stored locally while offline, and a
Hub that cannot be reached, and names the folder to fill. On a machine with internet,
``download=True`` (``l2v-eval download``) writes exactly these folders.

Why a wrapper: mteb 2.26 offers no way to point a task at local files. Its loaders call
``datasets.load_dataset(**task.metadata.dataset)`` with the Hub id (the retrieval loader first lists
the Hub's configs and splits), through names imported into their own modules, and ``datasets``
has no path-redirect setting; its cache (``cache_dir``, ``HF_DATASETS_CACHE``) is used as the
fallback here, but cannot read the ``save_to_disk`` folders above. So, for the duration of the
block only, the three ``datasets`` entry points are swapped in ``datasets`` itself and in the
modules that load the named task's data: mteb's generic loaders (:data:`LOADER_MODULES`) and the
modules of the task's own classes (a task with its own ``load_data``); no other module is touched.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SOURCE_FILE = "l2v_source.json"
ROUTED = ("load_dataset", "get_dataset_config_names", "get_dataset_split_names")
# Where mteb 2.26's task base classes load data from (reranking calls ``datasets.load_dataset`` itself).
LOADER_MODULES = ("mteb.abstasks.abstask", "mteb.abstasks.retrieval_dataset_loaders")
# Why a dataset could not be had (MissingDatasetError.reason).
NOT_FOUND, OFFLINE, UNREACHABLE, UNREADABLE = "not-found", "offline", "unreachable", "unreadable"


def failure_reason(err: BaseException) -> str:
    """Which of the four failures ``err`` (raised by ``datasets``) is."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    text = str(err)
    if isinstance(err, (DatasetNotFoundError, RepositoryNotFoundError)):
        return NOT_FOUND
    if isinstance(err, OfflineModeIsEnabled) or "OfflineModeIsEnabled" in text or datasets.config.HF_HUB_OFFLINE:
        return OFFLINE
    if isinstance(err, ConnectionError) or "LocalEntryNotFoundError" in text:
        return UNREACHABLE
    return UNREADABLE


class MissingDatasetError(RuntimeError):
    """A task's data is neither under --data-dir nor in the datasets cache, and cannot be downloaded."""

    def __init__(self, task_name: str, hub_path: str, config: str | None, revision: str | None,
                 local_dir: Path | None, cause: BaseException, downloading: bool = False):
        self.task_name = task_name
        self.hub_path = hub_path
        self.local_dir = local_dir
        self.reason = failure_reason(cause)
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        dataset = f"dataset {hub_path!r} (config {config or 'default'}, revision {revision or 'any'})"
        where = f"under {local_dir} nor in the datasets cache" if local_dir is not None else "in the datasets cache"
        fill = (f"on a connected machine, `l2v-eval download --tasks {task_name} --data-dir DIR` writes it "
                f"({'this is the folder to fill' if local_dir is not None else 'then pass --data-dir DIR'})")
        if downloading:
            fill = "nothing was saved for it; run the download again where the Hub is reachable"
        if self.reason == NOT_FOUND:
            message = (f"{dataset} does not exist on the Hugging Face Hub (or is private or gated: log in with "
                       "`hf auth login` or set HF_TOKEN); the task's metadata may be out of date for this mteb version")
        elif self.reason == OFFLINE:
            message = f"{dataset} is neither {where}, and offline mode is on (--offline or HF_HUB_OFFLINE=1); {fill}"
        elif self.reason == UNREACHABLE:
            message = (f"the Hugging Face Hub could not be reached and {dataset} is neither {where}; check the "
                       f"network / proxy / HF_ENDPOINT, or {fill}")
        else:
            message = f"{dataset} could not be read; {fill}"
        super().__init__(f"Task {task_name}: {message}. [{detail}]")


def local_dataset_dir(data_dir: str | Path, hub_path: str, config: str | None, split: str | None = None,
                      extra: Any = None) -> Path:
    """Where the copy of one ``load_dataset`` call lives under ``data_dir``."""
    folder = config or "default"
    if extra:  # data_files / data_dir variants of one repository must not share a folder
        folder += "__" + hashlib.sha1(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:8]
    base = Path(data_dir) / hub_path.strip("/").replace("/", "__") / folder
    return base / split if split else base


def _read_local(candidates: list[Path], split: str | None, revision: str | None):
    import datasets

    for i, candidate in enumerate(candidates):
        if not split and candidate.is_dir() and not (candidate / "dataset_dict.json").is_file():
            # one Dataset saved per split, each in its own folder: the call wants all of them
            per_split = {d.name: d for d in sorted(candidate.iterdir()) if (d / "dataset_info.json").is_file()}
            if per_split:
                return datasets.DatasetDict({s: datasets.load_from_disk(str(d)) for s, d in per_split.items()})
        if not (candidate / "dataset_info.json").is_file() and not (candidate / "dataset_dict.json").is_file():
            continue
        source = candidate / SOURCE_FILE
        if revision and source.is_file():
            saved = json.loads(source.read_text()).get("revision")
            if saved and saved != revision:
                logger.warning("%s holds revision %s of the dataset, the task asks for %s", candidate, saved, revision)
        data = datasets.load_from_disk(str(candidate))
        if split and i > 0:  # a whole DatasetDict was saved; the task wants one split of it
            if split not in data:
                raise KeyError(f"{candidate} has splits {sorted(data)}, not {split!r}")
            data = data[split]
        return data
    return None


def _local_configs(repo_dir: Path) -> list[str] | None:
    if not repo_dir.is_dir():
        return None
    names = sorted(d.name for d in repo_dir.iterdir() if d.is_dir())
    return names or None


def _local_splits(config_dir: Path) -> list[str] | None:
    dict_file = config_dir / "dataset_dict.json"
    if dict_file.is_file():
        return list(json.loads(dict_file.read_text()).get("splits", []))
    if config_dir.is_dir():
        names = sorted(d.name for d in config_dir.iterdir() if (d / "dataset_info.json").is_file())
        return names or None
    return None


class _Router:
    """The ``datasets`` entry points mteb calls, looking under ``data_dir`` first (see module doc)."""

    def __init__(self, data_dir: str | Path | None, task_name: str, download: bool):
        import datasets

        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.task_name = task_name
        self.download = download
        self.originals = {name: getattr(datasets, name) for name in ROUTED}

    def _fetch(self, function: str, path: str, config: str | None, revision: str | None, local: Path | None, /,
               *args: Any, **kwargs: Any):
        """The original ``datasets`` call, its failures turned into :class:`MissingDatasetError`."""
        try:
            return self.originals[function](path, *args, **kwargs)
        except OSError as err:  # ConnectionError, DatasetNotFoundError, FileNotFoundError, ...
            raise MissingDatasetError(self.task_name, path, config, revision, local, err, self.download) from err

    def load_dataset(self, path: str, name: str | None = None, *args: Any, split: str | None = None,
                     revision: str | None = None, **kwargs: Any):
        extra = {k: kwargs[k] for k in ("data_files", "data_dir") if kwargs.get(k)}
        local = local_dataset_dir(self.data_dir, path, name, split, extra) if self.data_dir else None
        if self.download:
            data = self._fetch("load_dataset", path, name, revision, None, name, *args, split=split,
                               revision=revision, **kwargs)
            if local is not None:
                _save_copy(data, local, {"path": path, "name": name, "split": split, "revision": revision, **extra})
            return data
        if local is not None:
            data = _read_local([local] + ([local.parent] if split else []), split, revision)
            if data is not None:
                return data
            kwargs.setdefault("cache_dir", str(self.data_dir))
        return self._fetch("load_dataset", path, name, revision, local, name, *args, split=split,
                           revision=revision, **kwargs)

    def get_dataset_config_names(self, path: str, revision: str | None = None, *args: Any, **kwargs: Any):
        local = self.data_dir / path.strip("/").replace("/", "__") if self.data_dir else None
        if local is not None and not self.download:
            names = _local_configs(local)
            if names is not None:
                return names
        return self._fetch("get_dataset_config_names", path, None, revision, local, revision, *args, **kwargs)

    def get_dataset_split_names(self, path: str, config_name: str | None = None, *args: Any,
                                revision: str | None = None, **kwargs: Any):
        local = local_dataset_dir(self.data_dir, path, config_name) if self.data_dir else None
        if local is not None and not self.download:
            names = _local_splits(local)
            if names is not None:
                return names
        return self._fetch("get_dataset_split_names", path, config_name, revision, local, config_name, *args,
                           revision=revision, **kwargs)


def _save_copy(data, local: Path, source: dict) -> None:
    local.mkdir(parents=True, exist_ok=True)
    data.save_to_disk(str(local))
    (local / SOURCE_FILE).write_text(json.dumps(source, default=str))
    logger.info("Saved %s (%s/%s) to %s", source["path"], source["name"] or "default", source["split"] or "all splits",
                local)


def _task_classes(task_name: str) -> list[type]:
    """The classes of the task mteb knows by ``task_name`` and, for an aggregate task, of its parts
    (none for a task mteb does not know by name: it loads through the generic loaders)."""
    import mteb

    try:
        task = mteb.get_task(task_name)
    except KeyError:
        return []
    parts = list(getattr(task.metadata, "tasks", None) or [])
    return [cls for t in (task, *parts) for cls in type(t).__mro__ if cls.__module__ not in ("builtins", "abc")]


def _loading_modules(task_name: str) -> list[Any]:
    """``datasets``, mteb's generic loaders and the modules of the task's own classes."""
    import datasets

    names = {*LOADER_MODULES, *(cls.__module__ for cls in _task_classes(task_name))}
    return [datasets, *(sys.modules[name] for name in sorted(names) if sys.modules.get(name) is not None)]


@contextlib.contextmanager
def _replaced(modules: list[Any], originals: dict[str, Any], replacements: dict[str, Any]) -> Iterator[None]:
    """Replace each original function in those ``modules`` that hold it; restored on leaving."""
    patched: list[tuple[Any, str]] = []
    for module in modules:
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, replacements[name])
                patched.append((module, name))
    try:
        yield
    finally:
        for module, name in patched:
            setattr(module, name, originals[name])


@contextlib.contextmanager
def dataset_source(data_dir: str | Path | None, task_name: str, *, download: bool = False) -> Iterator[None]:
    """Route the Hub lookups made inside the block to load ``task_name``'s data (see module docstring):
    ``load_dataset`` and, for retrieval tasks, ``get_dataset_config_names`` / ``get_dataset_split_names``."""
    router = _Router(data_dir, task_name, download)
    replacements = {name: getattr(router, name) for name in ROUTED}
    with _replaced(_loading_modules(task_name), router.originals, replacements):
        yield
