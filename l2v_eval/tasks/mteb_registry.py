"""Make mteb know l2v's bundled tasks, so ``mteb.get_task("L2VRealQuotePairs")``, ``mteb.get_tasks(...)``,
mteb's prompt validation (task-name keys of a sentence-transformers model's prompts) and mteb's result
summaries work on them like on mteb's own tasks.

mteb 2 builds its task registry once, at import, from the classes of ``mteb.tasks``
(``mteb.get_tasks.TASK_LIST`` and the name -> class dict ``mteb.get_tasks._TASKS_REGISTRY``), and offers
no public function to add a task. :func:`register_tasks` adds l2v's classes to both; it is the one
place that touches these private names, and ``tests/test_mteb_registry.py`` fails when mteb changes them.
``import l2v_eval`` calls it.

mteb's benchmark summary (``BenchmarkResults.get_benchmark_result``) inner-joins the results with its model
registry (``mteb.models.model_implementations.MODEL_REGISTRY``), so a model mteb does not ship silently
drops out of it. :func:`register_models` adds the ``ModelMeta`` that l2v writes beside every result, and
:func:`suite_summary` is mteb's own summary of an l2v results folder.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable
from pathlib import Path


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


def register_models(metas: Iterable) -> list[str]:
    """Add ``mteb.ModelMeta`` objects to mteb's model registry (names mteb already ships are left as they
    are); returns the names added. mteb caches frames built from the registry, so those caches are cleared."""
    registry = importlib.import_module("mteb.models.model_implementations").MODEL_REGISTRY
    added = []
    for meta in metas:
        if meta.name not in registry:
            registry[meta.name] = meta
            added.append(meta.name)
    if added:
        table = importlib.import_module("mteb.benchmarks._create_table")
        for cached in ("_static_model_meta", "_meta_df_no_zs", "_meta_df_with_zs", "_zero_shot_pct_cached"):
            if hasattr(getattr(table, cached, None), "cache_clear"):
                getattr(table, cached).cache_clear()
    return added


def results_model_metas(mteb_dir: str | os.PathLike) -> list:
    """The ``ModelMeta`` of every model in an mteb results folder (``<dir>/results/<model>/<rev>/model_meta.json``)."""
    from mteb.models.model_meta import ModelMeta

    metas = {}
    for path in sorted(Path(mteb_dir).rglob("model_meta.json")):
        meta = ModelMeta.model_validate(json.loads(path.read_text(encoding="utf-8")))
        metas.setdefault(meta.name, meta)
    return list(metas.values())


def suite_summary(mteb_dir: str | os.PathLike, suite: str):
    """mteb's own summary table (Borda rank, means over tasks and task types, model metadata) of the l2v
    results in ``mteb_dir`` (``results/<suite>/mteb`` after ``l2v-eval``) for a bundled suite, as pandas."""
    import mteb

    register_models(results_model_metas(mteb_dir))
    results = mteb.ResultCache(os.fspath(mteb_dir)).load_results(tasks=suite_benchmark(suite))
    return results.get_benchmark_result()
