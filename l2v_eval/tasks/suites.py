"""The suites ``l2v-eval`` knows by name, each one record: its name, its tasks, the instructions its
shipped rows were measured with, and where those baseline rows are.

A suite's name is a ``--tasks`` preset and the folder its results go to (``results/<suite>``); the
leaderboard ranks each suite on its own, beside the suite's shipped baselines, the report gives each
suite its own section, and a run of a suite prints its baselines next to the model it scored.

Suites:

* ``mteb-en`` (``MTEB(eng, v1)``, the 56 tasks the LLM2Vec paper reports) and ``mteb-en-v2``
  (``MTEB(eng, v2)``), taken from mteb's benchmark objects, which restrict multilingual tasks
  (STS17, STS22, ...) to their English subsets as the leaderboard does;
* ``mteb-en-quick``: a few small real MTEB tasks;
* ``l2v-real`` and ``l2v-mini``: bundled with l2v (nothing to download), with shipped baselines;
* ``probes``: the word-level probes.

A task type (``sts``, ``retrieval``, ...) names the English v1 tasks of that type; its results go to a
folder named after it, like a suite's.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import mteb
from mteb.abstasks.abstask import AbsTask

from ..probes.tasks import PROBE_TASKS
from . import mini, real

if TYPE_CHECKING:
    import pandas as pd

CUSTOM = "custom"  # the folder of a --tasks spec that names no suite and no task type
ENGLISH_V1, ENGLISH_V2 = "MTEB(eng, v1)", "MTEB(eng, v2)"
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
TASK_TYPES = {
    "sts": "STS",
    "retrieval": "Retrieval",
    "classification": "Classification",
    "clustering": "Clustering",
    "pair-classification": "PairClassification",
    "reranking": "Reranking",
    "summarization": "Summarization",
}


@dataclass(frozen=True)
class Suite:
    """One suite: what ``--tasks <name>`` runs and what its results are compared with."""

    name: str
    description: str
    make_tasks: Callable[[], list]
    """Fresh task objects, in order (runs never share loaded data through them)."""
    baselines: Path | None = None
    """Rows l2v ships for the suite (the columns of ``scores.csv``), ranked beside a folder's own."""
    instructions: str = "default"
    """The instruction set (``--instructions``) the shipped baselines were measured with."""
    folder: Path | None = None
    """A bundled suite's folder in the package: its test data and training splits (nothing to download)."""

    @property
    def bundled(self) -> bool:
        return self.folder is not None

    def tasks(self) -> list:
        return list(self.make_tasks())

    def shipped_baselines(self) -> pd.DataFrame | None:
        """The shipped baseline rows, or None when the suite ships none."""
        from ..results import load_results

        return load_results(self.baselines) if self.baselines is not None and self.baselines.is_file() else None

    def benchmark(self) -> mteb.Benchmark:
        """The suite as an ``mteb.Benchmark`` (its mteb tasks), e.g. for
        ``mteb.ResultCache(folder).load_results(tasks=suite.benchmark())``."""
        from mteb.benchmarks.benchmark import Benchmark

        return Benchmark(name=self.name, tasks=[t for t in self.tasks() if isinstance(t, AbsTask)],
                         description=self.description)


@lru_cache(maxsize=None)
def benchmark_tasks(benchmark: str) -> dict[str, AbsTask]:
    """mteb's task objects of one of its benchmarks, by name (shared: copy before use, see :func:`fresh`)."""
    return {t.metadata.name: t for t in mteb.get_benchmark(benchmark).tasks}


def fresh(task: AbsTask) -> AbsTask:
    """A copy, so runs never share loaded data or state through the cached benchmark objects."""
    return copy.deepcopy(task)


def mteb_task(name: str) -> AbsTask | None:
    """An mteb task by name: as the English benchmarks define it (English subsets), else mteb's own."""
    for benchmark in (ENGLISH_V1, ENGLISH_V2):
        found = benchmark_tasks(benchmark).get(name)
        if found is not None:
            return fresh(found)
    return mteb.get_task(name) if name in all_mteb_names() else None


@lru_cache(maxsize=None)
def all_mteb_names() -> tuple[str, ...]:
    from mteb.get_tasks import TASK_LIST

    return tuple(sorted(cls.metadata.name for cls in TASK_LIST))


def _benchmark(benchmark: str) -> Callable[[], list]:
    return lambda: [fresh(t) for t in benchmark_tasks(benchmark).values()]


def type_tasks(task_type: str) -> list[AbsTask]:
    """The English v1 tasks of one mteb task type (``STS``, ``Retrieval``, ...)."""
    return [fresh(t) for t in benchmark_tasks(ENGLISH_V1).values() if t.metadata.type == task_type]


SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    Suite("mteb-en", "MTEB(eng, v1): the 56 English tasks the LLM2Vec paper reports.", _benchmark(ENGLISH_V1)),
    Suite("mteb-en-v2", "MTEB(eng, v2): mteb's current English benchmark (41 tasks).", _benchmark(ENGLISH_V2)),
    Suite("mteb-en-quick", "A few small real MTEB tasks, one or two per task type.",
          lambda: [mteb_task(name) for name in QUICK]),
    Suite("l2v-real", "Five mteb tasks on real text shipped with l2v (l2v_eval/tasks/real).", real.real_tasks,
          baselines=real.DATA_DIR / "baselines.csv", folder=real.DATA_DIR),
    Suite("l2v-mini", "The smoke suite shipped with l2v: a few dozen hand-written examples per task type "
          "(l2v_eval/tasks/mini).", mini.mini_tasks, baselines=mini.DATA_DIR / "baselines.csv", folder=mini.DATA_DIR),
    Suite("probes", "The word-level probes: a linear probe per layer on frozen word vectors.",
          lambda: list(PROBE_TASKS.values())),
)}


@lru_cache(maxsize=None)
def bundled_task_names() -> tuple[str, ...]:
    """The tasks whose data ships with l2v (the bundled suites')."""
    return tuple(task.metadata.name for suite in SUITES.values() if suite.bundled for task in suite.tasks())


def suite_name(spec: str) -> str:
    """The folder a ``--tasks`` spec writes to by default: the suite or task type it names, else ``custom``."""
    spec = (spec or "").strip()
    return spec if spec in SUITES or spec.lower() in TASK_TYPES else CUSTOM


def get_suite(name: str) -> Suite | None:
    return SUITES.get(name)
