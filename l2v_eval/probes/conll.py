"""Readers for word-level tagging data: CoNLL-2003, CoNLL-2000 and CoNLL-U.

All three give a list of :class:`Sentence` objects (words plus one tag sequence
per annotated column). Malformed input raises :class:`ConllFormatError` naming
the file and line, because a silently skipped line would shift every later
label against its word.

Expected layout of a probe data directory (``--probe-data DIR``)::

    DIR/train.txt   DIR/dev.txt   DIR/test.txt          (CoNLL-2003: token POS chunk NER)

Split files are recognised by name, case-insensitively: a name whose parts
(split on ``.``, ``-``, ``_``) contain ``train`` is the train split; ``dev``,
``valid``, ``validation`` or ``testa`` the dev split; ``test`` or ``testb`` the
test split. So ``eng.train`` / ``eng.testa`` / ``eng.testb`` (the original
CoNLL-2003 names), ``valid.txt`` and ``en_ewt-ud-dev.conllu`` all work.
Accepted extensions: none, ``.txt``, ``.conll``, ``.conllu``, ``.iob``,
``.iob1``, ``.iob2``, ``.bio``, ``.tsv``, each optionally ``.gz``.
Task-specific subdirectories ``DIR/chunk``, ``DIR/ner`` and ``DIR/pos`` take
precedence over ``DIR`` itself, so CoNLL-2000 chunking files and a CoNLL-U
treebank can sit next to CoNLL-2003.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("conll2003", "conll2000", "conllu")
SPLITS = ("train", "dev", "test")

# Name parts that mark each split; see the module docstring.
_SPLIT_WORDS = {
    "train": {"train"},
    "dev": {"dev", "valid", "validation", "testa"},
    "test": {"test", "testb"},
}
_DATA_SUFFIXES = {"", ".txt", ".conll", ".conllu", ".iob", ".iob1", ".iob2", ".bio", ".tsv"}
_COLUMNS = {"conll2003": ("pos", "chunk", "ner"), "conll2000": ("pos", "chunk")}
_IOB_TAG = re.compile(r"^(O|[BI]-\S+)$")


class ConllFormatError(ValueError):
    """Malformed tagging data; the message names the file and line."""


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: dict[str, tuple[str, ...]] = field(compare=False)
    """Column name (``pos``, ``chunk``, ``ner``, ``upos``, ``xpos``) -> one tag per word."""
    line: int = 0
    """Line number (1-based) of the sentence's first word, for error messages."""


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with _open(path) as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise ConllFormatError(f"{path}: not UTF-8 text ({err})") from err


def _data_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def detect_format(path: os.PathLike | str) -> str:
    """``conllu`` for ``*.conllu`` files, else ``conll2003`` / ``conll2000`` by column count."""
    path = Path(path)
    if _data_suffix(path) == ".conllu":
        return "conllu"
    for number, line in _lines(path):
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            continue
        if len(line.split("\t")) == 10:
            return "conllu"
        n = len(stripped.split())
        if n == 4:
            return "conll2003"
        if n == 3:
            return "conll2000"
        if stripped.startswith("#"):
            continue  # CoNLL-U comment in a file without the .conllu extension
        raise ConllFormatError(
            f"{path}:{number}: cannot tell the format from {n} columns; expected 4 (CoNLL-2003: token POS chunk NER), "
            f"3 (CoNLL-2000: token POS chunk) or a .conllu file with 10 tab-separated columns: {line!r}"
        )
    raise ConllFormatError(f"{path}: no sentences (the file is empty or holds only -DOCSTART- lines)")


def _check_iob(path: Path, number: int, column: str, tag: str, line: str) -> None:
    if not _IOB_TAG.match(tag):
        raise ConllFormatError(
            f"{path}:{number}: {column} tag {tag!r} is not IOB (expected 'O', 'B-TYPE' or 'I-TYPE'): {line!r}"
        )


def _read_columns(path: Path, fmt: str) -> list[Sentence]:
    names = _COLUMNS[fmt]
    expected = 1 + len(names)
    header = "token " + " ".join(n.upper() if n != "pos" else "POS" for n in names)
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: dict[str, list[str]] = {n: [] for n in names}
    first_line = 0

    def flush() -> None:
        nonlocal words, tags
        if words:
            sentences.append(Sentence(tuple(words), {n: tuple(t) for n, t in tags.items()}, first_line))
        words, tags = [], {n: [] for n in names}

    for number, line in _lines(path):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        columns = stripped.split()
        if columns[0] == "-DOCSTART-":
            flush()  # a document boundary also ends a sentence left open without a blank line
            continue
        if len(columns) != expected:
            raise ConllFormatError(
                f"{path}:{number}: expected {expected} whitespace-separated columns ({header}), "
                f"got {len(columns)}: {line!r}"
            )
        if not words:
            first_line = number
        words.append(columns[0])
        for name, value in zip(names, columns[1:]):
            if name in ("chunk", "ner"):
                _check_iob(path, number, name, value, line)
            tags[name].append(value)
    flush()
    return sentences


def _read_conllu(path: Path) -> list[Sentence]:
    sentences: list[Sentence] = []
    words: list[str] = []
    upos: list[str] = []
    xpos: list[str] = []
    first_line = 0
    expected_id = 1

    def flush() -> None:
        nonlocal words, upos, xpos, expected_id
        if words:
            sentences.append(Sentence(tuple(words), {"upos": tuple(upos), "xpos": tuple(xpos)}, first_line))
        words, upos, xpos, expected_id = [], [], [], 1

    for number, line in _lines(path):
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            raise ConllFormatError(
                f"{path}:{number}: expected 10 tab-separated CoNLL-U columns "
                f"(ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), got {len(columns)}: {line!r}"
            )
        token_id = columns[0]
        if re.fullmatch(r"\d+-\d+", token_id) or re.fullmatch(r"\d+\.\d+", token_id):
            continue  # multiword ranges and empty nodes carry no word of their own
        if not token_id.isdigit():
            raise ConllFormatError(
                f"{path}:{number}: ID {token_id!r} is not an integer, a range or a decimal: {line!r}")
        if int(token_id) != expected_id:
            raise ConllFormatError(
                f"{path}:{number}: word ID {token_id} out of sequence (expected {expected_id}); "
                f"is a blank line missing between sentences? {line!r}"
            )
        form, tag_u, tag_x = columns[1], columns[3], columns[4]
        if not form or not tag_u:
            raise ConllFormatError(f"{path}:{number}: empty FORM or UPOS column: {line!r}")
        if not words:
            first_line = number
        expected_id += 1
        words.append(form)
        upos.append(tag_u)
        xpos.append(tag_x)
    flush()
    return sentences


def read_conll(path: os.PathLike | str, fmt: str | None = None) -> list[Sentence]:
    """Read a CoNLL-2003, CoNLL-2000 or CoNLL-U file (``fmt`` None: detected, see :func:`detect_format`).

    CoNLL-2003 sentences get tags ``pos``, ``chunk``, ``ner``; CoNLL-2000 ``pos``, ``chunk``;
    CoNLL-U ``upos`` and ``xpos``. Chunk and NER tags must be IOB (``O``, ``B-X``, ``I-X``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such data file: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; expected one of {FORMATS}")
    sentences = _read_conllu(path) if fmt == "conllu" else _read_columns(path, fmt)
    if not sentences:
        raise ConllFormatError(f"{path}: no sentences (the file is empty or holds only -DOCSTART- lines)")
    return sentences


def read_conll2003(path: os.PathLike | str) -> list[Sentence]:
    return read_conll(path, "conll2003")


def read_conll2000(path: os.PathLike | str) -> list[Sentence]:
    return read_conll(path, "conll2000")


def read_conllu(path: os.PathLike | str) -> list[Sentence]:
    return read_conll(path, "conllu")


def split_of(filename: str) -> str | None:
    """The split a data file name stands for (``train``/``dev``/``test``), or None."""
    name = filename.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.startswith(".") or os.path.splitext(name)[1] not in _DATA_SUFFIXES | {".testa", ".testb", ".train",
                                                                                 ".dev", ".test", ".valid"}:
        return None
    parts = set(re.split(r"[._\-]", name))
    found = [split for split, words in _SPLIT_WORDS.items() if parts & words]
    return found[0] if len(found) == 1 else None


def find_split_files(directory: os.PathLike | str) -> dict[str, Path]:
    """Map each split found in ``directory`` to its file; two files for one split is an error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Probe data directory {directory} does not exist")
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and (split := split_of(path.name)) is not None:
            found.setdefault(split, []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise ValueError(f"{directory}: several files look like the {split} split ({names}); keep one")
    return {split: paths[0] for split, paths in found.items()}


def file_sha256(path: os.PathLike | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Make every span start with ``B-`` (IOB1 uses ``B-`` only between two adjacent same-type spans).

    Valid IOB2 comes back unchanged, so applying this to data of unknown scheme is safe.
    """
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out
