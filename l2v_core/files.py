"""Safe file and folder handling.

Atomic writes: a reader never sees a half-written file, an interrupted write leaves the old one,
and the new file gets the mode a plain ``open(path, "w")`` would give it (``0666 & ~umask``), so
a shared results folder stays readable. Folders (an adapter, a merged encoder) get the same guarantee
from :func:`atomic_directory`: they are filled under a temporary name and moved into place once complete.
Output-folder checks: refuse, before any work, a folder that cannot be written or whose writing
would destroy the inputs or a user's files.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def _new_temporary_beside(path: Path) -> Path:
    """Create an empty, unique file next to ``path``; the kernel applies the umask to 0666 as for any new file."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"Could not create a temporary file beside {str(path)!r}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, then move it into place."""
    path = Path(path)
    tmp = _new_temporary_beside(path)
    try:
        write(os.fspath(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename must never publish a file whose data is still only in the page cache
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_json(path: str | os.PathLike, data, indent: int = 4) -> None:
    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)

    atomic_write(path, dump)


def read_json_object(path: str | os.PathLike, error: type[Exception] = ValueError,
                     what: str = "a JSON object") -> dict:
    """The JSON object in ``path``; ``error`` with one line naming the file when it is not valid JSON
    (or not UTF-8) or holds something else than an object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{os.fspath(path)} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise error(f"{os.fspath(path)} must hold {what}, got {type(value).__name__}")
    return value


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """Raise ``ValueError`` unless ``path`` is, or can be created as, a folder this process can write into.

    The check creates and removes a file in ``path`` (or its nearest existing parent), so it answers
    for read-only mounts, permissions and ACLs alike.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(existing)!r} is not a directory")
    try:
        probe = _new_temporary_beside(existing / ".l2v-write-check")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{what} {str(path)!r} is not writable ({err.strerror or err} in {str(existing)!r}); "
                         "choose a folder you can write to") from None


def check_output_dir(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                     overwrite: bool = False) -> None:
    """Refuse an output folder that is, holds or lies inside one of ``inputs`` (writing there could destroy
    them), and a non-empty one unless ``overwrite``. Inputs that are not local paths (hub ids) are skipped."""
    out = Path(output).resolve()
    for item in inputs:
        if item is None or not os.path.exists(item):
            continue
        source = Path(item).resolve()
        if out == source:
            raise ValueError(f"The output {str(output)!r} is the input {str(item)!r}; writing there would destroy it. "
                             "Choose another output folder")
        if source in out.parents:
            raise ValueError(f"The output {str(output)!r} lies inside the input {str(item)!r}; writing there could "
                             "destroy it. Choose an output folder outside it")
        if out in source.parents:
            raise ValueError(f"The output {str(output)!r} holds the input {str(item)!r}; writing there could "
                             "destroy it. Choose another output folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"The output {str(output)!r} exists and is not a directory")
    if out.is_dir() and not overwrite:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(f"The output {str(output)!r} is not empty ({len(entries)} entries: {shown}); choose a new "
                             "or empty folder, or pass --overwrite to replace files of the same name there")
    check_writable_dir(output, "The output")


def plain_file_modes(folder: str | os.PathLike, pattern: str = "**/*") -> None:
    """Give the files under ``folder`` matching ``pattern`` the mode a plain write gives (``0666 & ~umask``).

    Libraries that save through a private temporary file (safetensors 0.8 writes weights 0600)
    would otherwise leave an adapter or model that no one else on a shared machine can read.
    """
    umask = os.umask(0)
    os.umask(umask)
    for file in Path(folder).glob(pattern):
        if file.is_file() and not file.is_symlink():
            os.chmod(file, 0o666 & ~umask)


def _publish_dir(staging: Path, path: Path) -> None:
    """Move the complete folder ``staging`` to ``path`` (its files with plain-write modes). A folder
    already at ``path`` is moved aside first and deleted only once the new one is in place."""
    plain_file_modes(staging)
    aside = path.with_name(f".{path.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    if path.exists():
        os.replace(path, aside)
    os.replace(staging, path)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, entries_only: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; when the block completes its content is put in place whole, when
    it fails it is removed and ``path`` is left as it was.

    The temporary folder lies beside ``path`` and becomes ``path``. With ``entries_only`` (a folder that
    also holds other files, such as a training run's output), it lies inside ``path`` and each of its
    entries replaces the entry of that name there, whole, leaving the others alone.
    """
    path = Path(path)
    staging = path / ".staging.tmp" if entries_only else path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not entries_only:
        _publish_dir(staging, path)
        return
    plain_file_modes(staging)
    for item in staging.iterdir():
        target = path / item.name
        if item.is_dir():
            _publish_dir(item, target)
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    staging.rmdir()
