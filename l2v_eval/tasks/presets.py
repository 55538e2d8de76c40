"""``--tasks`` specifications: presets, task types, and mteb task names.

A spec is a comma list; each item is

* a preset: ``mteb-en`` (``MTEB(eng, v1)``, the 56 tasks the LLM2Vec paper reports),
  ``mteb-en-v2`` (``MTEB(eng, v2)``), ``mteb-en-quick`` (a few small real MTEB tasks),
  ``l2v-real`` (the bundled real-text suite, the default), ``l2v-mini`` (the bundled smoke suite
  for tests), ``probes`` (the word-level probes);
* a task type (``sts``, ``retrieval``, ``classification``, ``clustering``,
  ``pair-classification``, ``reranking``, ``summarization``), meaning the English v1
  tasks of that type;
* an mteb task name, or a probe name (``probe-…``).

Tasks of the English benchmarks are taken from the benchmark objects, which restrict
multilingual tasks (STS17, STS22, ...) to their English subsets as the leaderboard does.
"""
from __future__ import annotations

import difflib
from functools import lru_cache

import mteb
from mteb.abstasks.abstask import AbsTask

from ..probes.tasks import PROBE_TASK_NAMES, PROBE_TASKS, ProbeTask
from .mini import MINI_TASK_NAMES, mini_tasks
from .real import REAL_TASK_NAMES, real_tasks

BENCHMARKS = {"mteb-en": "MTEB(eng, v1)", "mteb-en-v2": "MTEB(eng, v2)"}
# Small MTEB tasks (about 100 to 8,000 texts each), one or two per task type; pair
# classification is left out because its English tasks are all large (16k+ pairs).
QUICK = (
    "BIOSSES",
    "STS16",
    "SummEval",
    "SciFact",
    "NFCorpus",
    "AskUbuntuDupQuestions",
    "Banking77Classification",
    "StackExchangeClustering.v2",
)
# Suites shipped with l2v (nothing to download): preset name -> (its task names, fresh instances).
BUNDLED_SUITES = {"l2v-real": (REAL_TASK_NAMES, real_tasks), "l2v-mini": (MINI_TASK_NAMES, mini_tasks)}
BUNDLED_TASK_NAMES = tuple(name for names, _ in BUNDLED_SUITES.values() for name in names)
PRESETS = (*BENCHMARKS, "mteb-en-quick", *BUNDLED_SUITES, "probes")
TASK_TYPES = {
    "sts": "STS",
    "retrieval": "Retrieval",
    "classification": "Classification",
    "clustering": "Clustering",
    "pair-classification": "PairClassification",
    "reranking": "Reranking",
    "summarization": "Summarization",
}

TaskRef = AbsTask | ProbeTask  # both carry .metadata (name, type, description, main_score)


class UnknownTaskError(ValueError):
    """A --tasks item names nothing known; the message lists close matches."""


@lru_cache(maxsize=None)
def _benchmark_tasks(benchmark: str) -> dict[str, AbsTask]:
    return {t.metadata.name: t for t in mteb.get_benchmark(benchmark).tasks}


@lru_cache(maxsize=None)
def _all_mteb_names() -> tuple[str, ...]:
    from mteb.get_tasks import TASK_LIST

    return tuple(sorted(cls.metadata.name for cls in TASK_LIST))


def _fresh(task: AbsTask) -> AbsTask:
    """A copy, so runs never share loaded data or state through the cached benchmark objects."""
    import copy

    return copy.deepcopy(task)


def _named_task(name: str) -> TaskRef | None:
    if name in PROBE_TASKS:
        return PROBE_TASKS[name]
    for names, tasks in BUNDLED_SUITES.values():
        if name in names:
            return next(t for t in tasks() if t.metadata.name == name)
    for benchmark in BENCHMARKS.values():
        found = _benchmark_tasks(benchmark).get(name)
        if found is not None:
            return _fresh(found)
    if name in _all_mteb_names():
        return mteb.get_task(name)
    return None


def _item(item: str) -> list[TaskRef] | None:
    if item in BENCHMARKS:
        return [_fresh(t) for t in _benchmark_tasks(BENCHMARKS[item]).values()]
    if item == "mteb-en-quick":
        return [_named_task(name) for name in QUICK]
    if item in BUNDLED_SUITES:
        return list(BUNDLED_SUITES[item][1]())
    if item == "probes":
        return list(PROBE_TASKS.values())
    if item.lower() in TASK_TYPES:
        wanted = TASK_TYPES[item.lower()]
        return [_fresh(t) for t in _benchmark_tasks(BENCHMARKS["mteb-en"]).values() if t.metadata.type == wanted]
    found = _named_task(item)
    return [found] if found is not None else None


def vocabulary() -> list[str]:
    return [*PRESETS, *TASK_TYPES, *BUNDLED_TASK_NAMES, *PROBE_TASK_NAMES, *_all_mteb_names()]


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
