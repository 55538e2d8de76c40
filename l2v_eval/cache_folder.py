"""The embedding cache's folder: which folder is l2v's, what ``l2v-eval cache info`` lists and what
``l2v-eval cache clear`` may delete.

A cache folder is l2v's when it holds ``l2v-cache.json``, a manifest naming l2v and the layout
version. l2v writes the manifest only into a folder it creates, an empty folder, or a cache of
earlier l2v versions (marked by l2v's own ``CACHEDIR.TAG`` only) that holds nothing but l2v's
files; any other existing folder is refused. ``CACHEDIR.TAG`` (which makes backup tools skip
the folder) is written only into a folder l2v created itself.

Clearing deletes l2v's own files only, recognised by name, place and content: the manifest, l2v's
tag, ``settings.json`` in a settings folder, ``instruction.txt`` and chunk files (their magic
bytes) in an instruction folder, and the temporary files of l2v's atomic writes; then the
folders this leaves empty. Anything else stays where it is and is named. A symbolic link is
never followed: clearing one is refused, naming its target.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2v_core.files import write_json

from .embedding_cache.chunks import HEADER, MAGIC, SUFFIX

MANIFEST_NAME = "l2v-cache.json"
LAYOUT_VERSION = 1
TAG_NAME = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55\n"
TAG = TAG_SIGNATURE + "# l2v-eval embedding cache (see `l2v-eval cache info`); safe to delete, vectors are recomputed.\n"
# The tags earlier l2v versions wrote; a folder marked only by one of them is an l2v cache of layout 0.
L2V_TAGS = (TAG,)

_SETTINGS_DIR = re.compile(r"[0-9a-f]{16}")
_INSTRUCTION_DIR = re.compile(r"instruction-[0-9a-f]{16}|no-instruction")
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


class CacheFolderError(ValueError):
    """A folder that is not (and cannot become) an l2v embedding cache."""


def _read_manifest(cache: Path) -> dict[str, Any] | None:
    path = cache / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CacheFolderError(f"{str(path)!r} cannot be read ({err}); nothing was changed") from None
    if not isinstance(manifest, dict) or manifest.get("tool") != "l2v":
        raise CacheFolderError(f"{str(path)!r} does not name l2v; {str(cache)!r} is not treated as an l2v cache")
    return manifest


def _has_l2v_tag(cache: Path) -> bool:
    tag = cache / TAG_NAME
    try:
        return tag.is_file() and tag.stat().st_size < 4096 and tag.read_text(encoding="utf-8") in L2V_TAGS
    except (OSError, UnicodeDecodeError):
        return False


def is_l2v_cache(cache: str | os.PathLike) -> bool:
    """Whether ``cache`` (or the folder a link at ``cache`` points to) is marked as l2v's: a manifest
    naming l2v, or (earlier versions) l2v's own tag."""
    cache = Path(cache)
    if not cache.is_dir():
        return False
    try:
        return _read_manifest(cache) is not None or _has_l2v_tag(cache)
    except CacheFolderError:
        return False


# ---------------------------------------------------------------------- which files are l2v's
def _is_temporary_of(path: Path, names: tuple[str, ...], chunks: bool = False) -> bool:
    """A temporary file of l2v's atomic write of one of ``names`` (or of a chunk file)."""
    match = _TEMPORARY.fullmatch(path.name)
    return (bool(match) and path.is_file() and not path.is_symlink()
            and (match["name"] in names or (chunks and match["name"].endswith(SUFFIX))))


def _is_chunk(path: Path) -> bool:
    if path.suffix != SUFFIX or path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _own_files(cache: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(l2v's files, l2v's folders deepest first, everything else at the top of what is not l2v's)."""
    files, folders, foreign = [], [], []
    top_names = (MANIFEST_NAME, TAG_NAME)
    for entry in sorted(cache.iterdir()):
        if entry.name == MANIFEST_NAME and entry.is_file() and not entry.is_symlink():
            files.append(entry)
        elif entry.name == TAG_NAME and _has_l2v_tag(cache) and not entry.is_symlink():
            files.append(entry)
        elif _is_temporary_of(entry, top_names):
            files.append(entry)
        elif entry.is_dir() and not entry.is_symlink():
            _model_folder(entry, files, folders, foreign)
        else:
            foreign.append(entry)
    return files, folders, foreign


def _model_folder(model: Path, files: list[Path], folders: list[Path], foreign: list[Path]) -> None:
    for settings in sorted(model.iterdir()):
        if not (_SETTINGS_DIR.fullmatch(settings.name) and settings.is_dir() and not settings.is_symlink()):
            foreign.append(settings)
            continue
        for entry in sorted(settings.iterdir()):
            if (entry.name == "settings.json" and entry.is_file() and not entry.is_symlink()) or \
                    _is_temporary_of(entry, ("settings.json",)):
                files.append(entry)
            elif _INSTRUCTION_DIR.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                for item in sorted(entry.iterdir()):
                    own = (item.name == "instruction.txt" and item.is_file() and not item.is_symlink()) or \
                        _is_chunk(item) or _is_temporary_of(item, ("instruction.txt",), chunks=True)
                    (files if own else foreign).append(item)
                folders.append(entry)
            else:
                foreign.append(entry)
        folders.append(settings)
    folders.append(model)


# ---------------------------------------------------------------------- a run's cache folder
def check_cache_folder(cache: str | os.PathLike, what: str = "--embedding-cache") -> None:
    """Raise :class:`CacheFolderError` (one line naming the folder) unless ``cache`` is an l2v cache,
    an empty folder, or a folder l2v can create; checks nothing is written (it writes nothing)."""
    from l2v_core.files import check_writable_dir

    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise CacheFolderError(f"{what} {str(cache)!r} exists and is not a directory")
    if cache.is_dir() and _read_manifest(cache) is None:
        _, _, foreign = _own_files(cache)
        if foreign and not _has_l2v_tag(cache):
            shown = ", ".join(p.name for p in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise CacheFolderError(f"{what} {str(cache)!r} already holds files that are not an l2v embedding cache "
                                   f"({shown}); give a new folder (l2v creates it) or an existing l2v cache")
        if foreign:
            raise CacheFolderError(f"{what} {str(cache)!r} carries l2v's cache tag but also holds other files "
                                   f"({foreign[0].name}, ...); give a new folder (l2v creates it)")
    try:
        check_writable_dir(cache, what)
    except ValueError as err:
        raise CacheFolderError(str(err)) from None


def claim(cache: str | os.PathLike) -> Path:
    """Make ``cache`` an l2v cache folder (see the module doc) and return it; refuses any other folder."""
    cache = Path(cache)
    check_cache_folder(cache)
    manifest = _read_manifest(cache) if cache.is_dir() else None
    if manifest is not None:
        if manifest.get("layout", 0) > LAYOUT_VERSION:
            raise CacheFolderError(f"{str(cache)!r} is an embedding cache of a newer l2v (layout "
                                   f"{manifest.get('layout')}); update l2v or give another --embedding-cache")
        return cache
    created = not cache.exists()
    cache.mkdir(parents=True, exist_ok=True)
    if created:
        from l2v_core.files import atomic_write

        atomic_write(cache / TAG_NAME, lambda p: Path(p).write_text(TAG, encoding="utf-8"))
    # Only a folder l2v created is removed once a clear has emptied it.
    write_json(cache / MANIFEST_NAME, {"tool": "l2v", "what": "l2v-eval embedding cache", "layout": LAYOUT_VERSION,
                                       "created_by_l2v": created}, indent=2)
    return cache


# ---------------------------------------------------------------------- inspecting and clearing
@dataclass
class StoreInfo:
    path: Path
    settings: dict[str, Any]
    instruction: str
    files: int
    texts: int
    bytes: int
    unfinished: int  # temporary files of writes that were killed
    problem: str = ""  # why settings.json could not be read


def find_caches(path: str | os.PathLike) -> list[Path]:
    """Embedding cache folders at ``path``: the folder itself, or ``embedding-cache`` folders of a
    results folder or of its suite folders."""
    path = Path(path)
    candidates = [path, path / "embedding-cache", *sorted(path.glob("*/embedding-cache"))]
    return [p for p in candidates if is_l2v_cache(p)]


def _settings_of(settings_file: Path) -> tuple[dict[str, Any], str]:
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {}, f"{settings_file} cannot be read ({type(err).__name__}: {str(err)[:120]})"
    if not isinstance(settings, dict):
        return {}, f"{settings_file} holds a JSON {type(settings).__name__}, not an object of settings"
    return settings, ""


def describe(cache: str | os.PathLike) -> list[StoreInfo]:
    infos = []
    for settings_file in sorted(Path(cache).glob("*/*/settings.json")):
        settings, problem = _settings_of(settings_file)
        for directory in sorted(p for p in settings_file.parent.iterdir() if p.is_dir()):
            files = sorted(directory.glob(f"*{SUFFIX}"))
            texts = 0
            for f in files:
                with open(f, "rb") as handle:
                    head = handle.read(HEADER.size)
                texts += HEADER.unpack(head)[1] if len(head) == HEADER.size else 0
            instruction_file = directory / "instruction.txt"
            infos.append(StoreInfo(
                path=directory, settings=settings, problem=problem,
                instruction=instruction_file.read_text(encoding="utf-8") if instruction_file.is_file() else "",
                files=len(files), texts=texts, bytes=sum(f.stat().st_size for f in files),
                unfinished=len(list(directory.glob(".*.tmp")))))
    return infos


def folder_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def clear(cache: str | os.PathLike) -> tuple[int, list[Path]]:
    """Delete l2v's own files in an l2v cache folder (see the module doc) and the folders this empties;
    returns (bytes freed, what was left because it is not l2v's)."""
    cache = Path(cache)
    if cache.is_symlink():
        raise CacheFolderError(f"{str(cache)!r} is a symbolic link to {os.readlink(cache)!r}; links are not followed: "
                               "clear the folder it points to by its own path; nothing deleted")
    if not is_l2v_cache(cache):
        raise CacheFolderError(f"{str(cache)!r} is not an l2v embedding cache (no {MANIFEST_NAME} naming l2v); "
                               "nothing deleted")
    manifest = _read_manifest(cache) or {}  # a tagged cache of earlier l2v versions: its folder stays
    files, folders, foreign = _own_files(cache)
    manifest_file = cache / MANIFEST_NAME
    freed = 0
    for file in sorted(files, key=lambda f: f == manifest_file):  # the manifest last: an interrupted clear
        freed += file.stat().st_size                               # leaves a folder still known as l2v's
        file.unlink()
    for folder in folders:
        if not any(folder.iterdir()):
            folder.rmdir()
    if manifest.get("created_by_l2v") and not any(cache.iterdir()):
        cache.rmdir()
    return freed, foreign


def info(path: str | os.PathLike) -> str:
    """What ``l2v-eval cache info`` prints: every cache at ``path``, per model, settings and instruction."""
    caches = find_caches(path)
    if not caches:
        return f"No l2v embedding cache at {path} (l2v-eval writes one to <output>/embedding-cache)"
    lines = []
    for cache in caches:
        stores = describe(cache)
        lines.append(f"{cache}: {human_bytes(folder_bytes(cache))}, {sum(s.texts for s in stores):,} texts")
        for s in stores:
            if s.problem:
                lines.append(f"  {s.problem}: {s.texts:,} texts in {s.files} file(s) of unknown settings")
                continue
            settings = ", ".join(f"{k}={v}" for k, v in s.settings.items() if k not in ("model", "revision") and v)
            instruction = repr(s.instruction[:60]) if s.instruction else "no instruction"
            unfinished = f", {s.unfinished} unfinished write(s)" if s.unfinished else ""
            lines.append(f"  {s.settings.get('model')} @ {s.settings.get('revision')} ({settings}), {instruction}: "
                         f"{s.texts:,} texts in {s.files} file(s), {human_bytes(s.bytes)}{unfinished}")
    return "\n".join(lines)


def clear_caches(path: str | os.PathLike) -> str:
    """What ``l2v-eval cache clear`` does and prints: delete l2v's files in every cache at ``path``.
    A ``path`` that neither is nor holds an l2v cache is refused, naming it."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        clear(path)  # raises the error naming what it is
    caches = find_caches(path)
    if not caches:
        if (path / TAG_NAME).is_file():
            raise CacheFolderError(f"{str(path)!r} has a {TAG_NAME} that is not l2v's and no {MANIFEST_NAME}: it is "
                                   "not an l2v embedding cache; nothing deleted")
        raise CacheFolderError(f"{str(path)!r} neither is nor holds an l2v embedding cache; nothing deleted")
    lines = []
    for cache in caches:
        if cache.is_symlink():
            lines.append(f"Left {cache}: a symbolic link to {os.readlink(cache)!r} (links are not followed; clear "
                         "that folder by its own path)")
            continue
        freed, kept = clear(cache)
        left = (f"; kept {len(kept)} item(s) that are not l2v's: " + ", ".join(str(p.relative_to(cache)) for p in kept[:5])
                + (", ..." if len(kept) > 5 else "")) if kept else ""
        lines.append(f"Deleted l2v's files in {cache} ({human_bytes(freed)}){left}")
    return "\n".join(lines)
