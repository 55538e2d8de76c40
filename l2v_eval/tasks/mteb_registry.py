"""Make mteb know l2v's bundled tasks, so ``mteb.get_task("L2VRealQuotePairs")``, ``mteb.get_tasks(...)``,
mteb's prompt validation (task-name keys of a sentence-transformers model's prompts) and mteb's result
summaries work on them like on mteb's own tasks.

mteb 2 builds its task registry once, at import, from the classes of ``mteb.tasks``
(``mteb.get_tasks.TASK_LIST`` and the name -> class dict ``mteb.get_tasks._TASKS_REGISTRY``), and offers
no public function to add a task. :func:`register_tasks` adds l2v's classes to both; it is the one
place that touches these private names, and ``tests/test_mteb_registry.py`` fails when mteb changes them.
``import l2v_eval`` calls it.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable


def _registry_module():
    module = importlib.import_module("mteb.get_tasks")
    if not isinstance(getattr(module, "_TASKS_REGISTRY", None), dict) or not isinstance(
            getattr(module, "TASK_LIST", None), tuple):
        raise RuntimeError("mteb.get_tasks no longer has _TASKS_REGISTRY (dict) and TASK_LIST (tuple); "
                           "l2v_eval.tasks.mteb_registry must follow mteb's new task registry")
    return module


def bundled_task_classes() -> tuple[type, ...]:
    """The task classes of the suites shipped with l2v (``l2v-real``, ``l2v-mini``)."""
    from .mini import MINI_TASKS
    from .real import REAL_TASKS

    return (*REAL_TASKS, *MINI_TASKS)


def register_tasks(classes: Iterable[type] | None = None) -> list[str]:
    """Add task classes (default: l2v's bundled ones) to mteb's task registry; returns the names added.

    Idempotent. A name mteb already uses for another class is refused (``ValueError`` naming it): mteb
    itself refuses duplicate task names.
    """
    module = _registry_module()
    registry, added = module._TASKS_REGISTRY, []
    for cls in bundled_task_classes() if classes is None else classes:
        name = cls.metadata.name
        known = registry.get(name)
        if known is cls:
            continue
        if known is not None:
            raise ValueError(f"mteb already has a task named {name!r} ({known.__module__}.{known.__qualname__})")
        registry[name] = cls
        added.append(cls)
    if added:
        module.TASK_LIST = (*module.TASK_LIST, *added)  # get_tasks(...) filters read this module global
    return [cls.metadata.name for cls in added]


def suite_benchmark(suite: str):
    """A bundled suite (``l2v-real``, ``l2v-mini``) as an ``mteb.Benchmark``, e.g. for
    ``mteb.ResultCache(folder).load_results(tasks=suite_benchmark("l2v-real"))``."""
    from .suites import SUITES

    bundled = [name for name, record in SUITES.items() if record.bundled]
    if suite not in bundled:
        raise ValueError(f"{suite!r} is not a bundled suite; choose one of {', '.join(bundled)}")
    register_tasks()
    return SUITES[suite].benchmark()
