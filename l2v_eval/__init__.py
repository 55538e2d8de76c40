"""l2v evaluation harness: MTEB (through the ``mteb`` package), the bundled ``l2v-mini``
suite and word-level probes, into one tidy results table with leaderboards and reports.

Names are imported on first use, so the ``l2v-eval`` command line (``l2v_cli.eval``) can set offline mode before
mteb, datasets and huggingface_hub are imported (they read it once, at import).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalConfig": "harness",
    "RunSummary": "harness",
    "run_evaluation": "harness",
    "build_leaderboard": "leaderboard",
    "write_leaderboard": "leaderboard",
    "L2VEncoder": "model",
    "ModelSpec": "model",
    "write_report": "report",
    "ResultsStore": "results",
    "load_results": "results",
    "resolve_tasks": "tasks.presets",
    "MtebEvaluator": "training_eval",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
