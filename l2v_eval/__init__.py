"""l2v evaluation harness: MTEB (through the ``mteb`` package), the bundled suites (``l2v-real``, the
default, and the ``l2v-mini`` smoke suite) and word-level probes, into one tidy results table with
leaderboards and reports.

Importing the package registers the bundled tasks with mteb (:mod:`l2v_eval.tasks.mteb_registry`), so
``mteb.get_task("L2VRealQuotePairs")`` and mteb's result summaries know them. The names below are
imported from their modules on first use.
"""
from __future__ import annotations

import importlib

from .tasks.mteb_registry import register_tasks

_EXPORTS = {
    "EvalConfig": "harness",
    "RunSummary": "run_summary",
    "run_evaluation": "harness",
    "build_leaderboard": "leaderboard",
    "compare": "comparison",
    "write_leaderboard": "leaderboard",
    "L2VEncoder": "encoder_adapter",
    "ModelSpec": "model",
    "write_report": "report",
    "ResultsStore": "results",
    "load_results": "results",
    "resolve_tasks": "tasks.presets",
    "MtebEvaluator": "training_eval",
}
__all__ = list(_EXPORTS)

register_tasks()


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
