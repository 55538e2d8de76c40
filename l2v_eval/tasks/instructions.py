"""Which instruction each task's texts get.

``default`` is the LLM2Vec paper's table (``instructions.json``, one instruction per
MTEB task, as published with the reference implementation). A task outside that table
gets the instruction of the paper task it was adapted from (e.g. FEVERHardNegatives
from FEVER), else the prompt mteb ships in its metadata, formatted the way mteb's own
LLM2Vec wrapper formats it, else none (with a warning). ``none`` gives every text an empty instruction, and a
JSON file (task name or task type → instruction) replaces the table outright.

Retrieval documents never get an instruction: the paper puts it on queries only.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from mteb.types import PromptType

logger = logging.getLogger(__name__)

PAPER_INSTRUCTIONS_FILE = Path(__file__).resolve().with_name("instructions.json")


class InstructionsError(ValueError):
    """An instructions file is missing or malformed."""


def _read_table(path: Path) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except FileNotFoundError:
        raise InstructionsError(f"Instructions file not found: {str(path)!r}") from None
    except json.JSONDecodeError as err:
        raise InstructionsError(f"Instructions file {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(table, dict):
        raise InstructionsError(
            f"Instructions file {str(path)!r} must hold a JSON object mapping task names to instructions, "
            f"got a {type(table).__name__}"
        )
    for key, value in table.items():
        if not isinstance(value, str):
            raise InstructionsError(
                f"Instructions file {str(path)!r}: the instruction for {key!r} must be a string, "
                f"got {type(value).__name__}"
            )
    return table


def _paper_format(instruction: str) -> str:
    """mteb's LLM2Vec wrapper ends every instruction with a colon; so do the paper's."""
    if instruction and not instruction.endswith(":"):
        instruction = instruction.strip(".") + ":"
    return instruction


@dataclass
class Instructions:
    """Resolves the instruction for a task and prompt type.

    ``label`` names the choice in results: ``default``, ``none``, or ``file-<hash>`` (so
    runs with different instructions land in different result folders).
    """

    label: str
    table: Mapping[str, str] = field(default_factory=dict)
    use_task_prompts: bool = False
    _warned: set[str] = field(default_factory=set, repr=False)

    def for_task(self, task_metadata, prompt_type: PromptType | None) -> str:
        if prompt_type == PromptType.document:
            return ""
        name, task_type = task_metadata.name, task_metadata.type
        if name in self.table:
            return self.table[name]
        if task_type in self.table:
            return self.table[task_type]
        if self.use_task_prompts:
            # Newer versions of paper tasks (FEVERHardNegatives, STS22.v2, ...) keep the original's instruction.
            for origin in task_metadata.adapted_from or ():
                if origin in self.table:
                    return self.table[origin]
            prompt = task_metadata.prompt
            if isinstance(prompt, dict):
                prompt = prompt.get(prompt_type.value) if prompt_type else None
            if prompt:
                return _paper_format(prompt)
        if self.label != "none" and name not in self._warned:
            self._warned.add(name)
            logger.warning("No instruction for task %s (instructions: %s); its texts are encoded without one",
                           name, self.label)
        return ""


def load_instructions(spec: str | os.PathLike | None) -> Instructions:
    """``default`` (or None), ``none``, or the path of a JSON file."""
    if spec is None or str(spec) == "default":
        return Instructions("default", _read_table(PAPER_INSTRUCTIONS_FILE), use_task_prompts=True)
    if str(spec) == "none":
        return Instructions("none")
    path = Path(spec)
    if not str(spec).endswith(".json") and not path.exists():
        raise InstructionsError(f"--instructions must be 'default', 'none' or a JSON file, got {str(spec)!r}")
    table = _read_table(path)
    digest = hashlib.sha1(json.dumps(table, sort_keys=True).encode()).hexdigest()[:8]
    return Instructions(f"file-{digest}", table)


def paper_instructions() -> dict[str, str]:
    """The LLM2Vec paper's task → instruction table."""
    return _read_table(PAPER_INSTRUCTIONS_FILE)


# The query prompt a model gets when its training instruction is unknown: the paper's (and the reference
# README's) web-search instruction, the most general of its retrieval instructions.
GENERAL_QUERY_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query:"
# mteb task types whose texts are queries and documents (mteb passes prompt_type query / document).
QUERY_DOCUMENT_TYPES = ("Retrieval", "Reranking", "InstructionRetrieval", "InstructionReranking")


def _asymmetric(task) -> bool:
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    return isinstance(task, AbsTaskRetrieval) or task.metadata.type in QUERY_DOCUMENT_TYPES


def known_tasks() -> list:
    """Every task l2v-eval knows by name without downloading: the bundled suites and the English MTEB
    benchmarks (the paper's table covers MTEB(eng, v1))."""
    from .suites import ENGLISH_V1, ENGLISH_V2, SUITES, benchmark_tasks

    tasks = [task for suite in SUITES.values() if suite.bundled for task in suite.tasks()]
    for benchmark in (ENGLISH_V1, ENGLISH_V2):
        tasks.extend(benchmark_tasks(benchmark).values())
    return tasks


def sentence_transformer_prompts(instructions: str | os.PathLike | Instructions | None = "default",
                                 tasks: Iterable | None = None, query_instruction: str | None = None) -> dict[str, str]:
    """The instructions ``l2v-eval`` gives each task, as sentence-transformers prompts that mteb's
    sentence-transformers wrapper finds: it looks a prompt up by ``<task>-<query|document>``, task name,
    ``<TaskType>-<query|document>``, task type, then ``query`` / ``document``.

    ``instructions``: what ``l2v-eval --instructions`` takes (``default``, ``none``, a JSON file) or an
    :class:`Instructions`. ``tasks``: mteb task objects to key by name (default: the bundled suites and
    the English MTEB benchmarks). With ``default``, query/document tasks get ``<task>-query`` and an empty
    ``<task>-document``, other tasks ``<task>``; with a file, its keys are copied (task names or types) and
    every text task type falls back to no instruction, exactly as ``l2v-eval`` resolves them; with
    ``none``, every type maps to no instruction. Documents never get one. ``query`` (what
    ``encode_query`` uses, and mteb for tasks not listed) is ``query_instruction``, else the paper's
    general web-search instruction.
    """
    spec = instructions if isinstance(instructions, Instructions) else load_instructions(instructions)
    prompts: dict[str, str] = {}
    if spec.label == "default":
        silent = Instructions(spec.label, spec.table, spec.use_task_prompts, _warned=_AllWarned())
        for task in known_tasks() if tasks is None else tasks:
            name = task.metadata.name
            if _asymmetric(task):
                prompts[f"{name}-query"] = silent.for_task(task.metadata, PromptType.query)
                prompts[f"{name}-document"] = ""
            else:
                prompts[name] = silent.for_task(task.metadata, None)
    else:
        from mteb.abstasks.task_metadata import TaskType

        for key, text in spec.table.items():
            prompts[key], prompts[f"{key}-document"] = text, ""
        for task_type in get_args(TaskType):
            prompts.setdefault(task_type, "")
            prompts.setdefault(f"{task_type}-document", "")
    for task_type in QUERY_DOCUMENT_TYPES:
        prompts.setdefault(f"{task_type}-document", "")
    prompts["query"] = GENERAL_QUERY_INSTRUCTION if query_instruction is None else query_instruction
    return prompts


class _AllWarned(set):
    """A warned-set that holds every name: building prompts for every known task warns about none of them."""

    def __contains__(self, item) -> bool:
        return True


def task_roles(task) -> dict[str, PromptType | None]:
    """The roles a task's texts are encoded in (role name -> the ``prompt_type`` mteb passes)."""
    if _asymmetric(task):
        return {"query": PromptType.query, "document": PromptType.document}
    return {"text": None}
