"""Task data from local copies instead of the Hugging Face Hub.

mteb tasks fetch their data with ``datasets.load_dataset(path, name, split=..., revision=...)``
(retrieval tasks first list configs and splits), from many modules: the task base classes
and tasks with their own loaders. Inside :func:`dataset_source` each of those calls
first looks under ``--data-dir``::

    DATA_DIR/<org>__<dataset>/<config or "default">/<split>/   (a Dataset saved with save_to_disk)
    DATA_DIR/<org>__<dataset>/<config or "default">/           (a DatasetDict saved with save_to_disk)

and otherwise falls through to ``load_dataset`` with ``DATA_DIR`` as its cache, so a copied
Hugging Face datasets cache works too. When neither has the data, the call raises
:class:`MissingDatasetError`, whose message names the task and the folder to fill. On a
machine with internet, ``download=True`` (``l2v-eval download``) writes exactly these folders.
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
# What datasets raises when the Hub cannot be reached and nothing is cached.
_UNAVAILABLE = (ConnectionError, OSError)


class MissingDatasetError(RuntimeError):
    """A task's data is neither under --data-dir nor in a reachable cache or hub."""

    def __init__(self, task_name: str, hub_path: str, config: str | None, revision: str | None,
                 local_dir: Path | None, cause: BaseException):
        self.task_name = task_name
        self.hub_path = hub_path
        self.local_dir = local_dir
        where = (
            f"save it with datasets' save_to_disk under {local_dir}"
            if local_dir is not None
            else "pass --data-dir DIR holding a copy saved with save_to_disk"
        )
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(
            f"Task {task_name}: dataset {hub_path!r} (config {config or 'default'}, revision {revision or 'any'}) "
            f"is not available offline; {where} (on a machine with internet, "
            f"`l2v-eval download --tasks {task_name} --data-dir DIR` writes it). [{reason}]"
        )


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


@contextlib.contextmanager
def dataset_source(data_dir: str | Path | None, task_name: str, *, download: bool = False) -> Iterator[None]:
    """Route the Hub lookups mteb makes inside the block (see module docstring): ``load_dataset``
    and, for retrieval tasks, ``get_dataset_config_names`` / ``get_dataset_split_names``."""
    import datasets

    originals = {name: getattr(datasets, name)
                 for name in ("load_dataset", "get_dataset_config_names", "get_dataset_split_names")}

    def unavailable(path, name, revision, local, err):
        return MissingDatasetError(task_name, path, name, revision, local, err)

    def load_dataset(path: str, name: str | None = None, *args: Any, split: str | None = None,
                     revision: str | None = None, **kwargs: Any):
        original = originals["load_dataset"]
        extra = {k: kwargs[k] for k in ("data_files", "data_dir") if kwargs.get(k)}
        local = local_dataset_dir(data_dir, path, name, split, extra) if data_dir else None
        if download:
            data = original(path, name, *args, split=split, revision=revision, **kwargs)
            if local is not None:
                local.mkdir(parents=True, exist_ok=True)
                data.save_to_disk(str(local))
                (local / SOURCE_FILE).write_text(json.dumps(
                    {"path": path, "name": name, "split": split, "revision": revision, **extra}, default=str))
                logger.info("Saved %s (%s/%s) to %s", path, name or "default", split or "all splits", local)
            return data
        if local is not None:
            candidates = [local] + ([local.parent] if split else [])
            data = _read_local(candidates, split, revision)
            if data is not None:
                return data
            kwargs.setdefault("cache_dir", str(data_dir))
        try:
            return original(path, name, *args, split=split, revision=revision, **kwargs)
        except _UNAVAILABLE as err:
            raise unavailable(path, name, revision, local, err) from err

    def get_dataset_config_names(path: str, revision: str | None = None, *args: Any, **kwargs: Any):
        local = Path(data_dir) / path.strip("/").replace("/", "__") if data_dir else None
        if local is not None and not download:
            names = _local_configs(local)
            if names is not None:
                return names
        try:
            return originals["get_dataset_config_names"](path, revision, *args, **kwargs)
        except _UNAVAILABLE as err:
            raise unavailable(path, None, revision, local, err) from err

    def get_dataset_split_names(path: str, config_name: str | None = None, *args: Any,
                                revision: str | None = None, **kwargs: Any):
        local = local_dataset_dir(data_dir, path, config_name) if data_dir else None
        if local is not None and not download:
            names = _local_splits(local)
            if names is not None:
                return names
        try:
            return originals["get_dataset_split_names"](path, config_name, *args, revision=revision, **kwargs)
        except _UNAVAILABLE as err:
            raise unavailable(path, config_name, revision, local, err) from err

    replacements = {"load_dataset": load_dataset, "get_dataset_config_names": get_dataset_config_names,
                    "get_dataset_split_names": get_dataset_split_names}
    patched: list[tuple[Any, str]] = []
    modules = [datasets] + [m for n, m in list(sys.modules.items()) if n.startswith("mteb") and m is not None]
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
