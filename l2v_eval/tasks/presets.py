"""``--tasks`` specifications: suites, task types, and task names.

A spec is a comma list; each item is

* a suite (:mod:`l2v_eval.tasks.suites`): ``mteb-en`` (``MTEB(eng, v1)``, the 56 tasks the LLM2Vec
  paper reports), ``mteb-en-v2`` (``MTEB(eng, v2)``), ``mteb-en-quick`` (a few small real MTEB
  tasks), ``l2v-real`` (the bundled real-text suite, the default), ``l2v-mini`` (the bundled smoke
  suite for tests), ``probes`` (the word-level probes);
* a task type (``sts``, ``retrieval``, ``classification``, ``clustering``,
  ``pair-classification``, ``reranking``, ``summarization``), meaning the English v1
  tasks of that type;
* an mteb task name, or a probe name (``probe-…``).
"""
from __future__ import annotations

import difflib

from mteb.abstasks.abstask import AbsTask

from ..probes.tasks import PROBE_TASK_NAMES, PROBE_TASKS, ProbeTask
from .suites import SUITES, TASK_TYPES, all_mteb_names, bundled_task_names, mteb_task, type_tasks

PRESETS = tuple(SUITES)

TaskRef = AbsTask | ProbeTask  # both carry .metadata (name, type, description, main_score)


class UnknownTaskError(ValueError):
    """A --tasks item names nothing known; the message lists close matches."""


def _named_task(name: str) -> TaskRef | None:
    if name in PROBE_TASKS:
        return PROBE_TASKS[name]
    if name in bundled_task_names():
        return next(t for suite in SUITES.values() if suite.bundled for t in suite.tasks() if t.metadata.name == name)
    return mteb_task(name)


def _item(item: str) -> list[TaskRef] | None:
    if item in SUITES:
        return SUITES[item].tasks()
    if item.lower() in TASK_TYPES:
        return type_tasks(TASK_TYPES[item.lower()])
    found = _named_task(item)
    return [found] if found is not None else None


def vocabulary() -> list[str]:
    return [*PRESETS, *TASK_TYPES, *bundled_task_names(), *PROBE_TASK_NAMES, *all_mteb_names()]


def close_matches(name: str, n: int = 5) -> list[str]:
    words = vocabulary()
    lowered: dict[str, str] = {}
    for w in words:
        lowered.setdefault(w.lower(), w)
    return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


def task_name(task: TaskRef) -> str:
    return task.metadata.name


def resolve_tasks(spec: str) -> list[TaskRef]:
    """The tasks a spec names, in order, without duplicates; every unknown item is reported at once."""
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownTaskError("--tasks is empty; give a preset (e.g. l2v-real, mteb-en), a task type or task names")
    tasks: list[TaskRef] = []
    seen: set[str] = set()
    problems: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        found = _item(item)
        if found is None:
            matches = close_matches(item)
            hint = f"did you mean {', '.join(matches)}?" if matches else "no close match"
            problems.append(f"unknown task or preset {item!r} ({hint})")
            continue
        for task in found:
            if task_name(task) not in seen:
                seen.add(task_name(task))
                tasks.append(task)
    if not tasks and not problems:
        raise UnknownTaskError(f"--tasks {spec!r} is empty; give a preset, a task type or task names")
    if problems:
        raise UnknownTaskError(
            "; ".join(problems) + f". Presets: {', '.join(PRESETS)}; task types: {', '.join(TASK_TYPES)}"
        )
    return tasks
