"""The two kinds of task l2v evaluates, told apart in this one place.

mteb tasks (mteb's own and the bundled suites') are scored by ``mteb.evaluate`` on sentence vectors;
word-level probes (:mod:`l2v_eval.probes`) train a linear probe per layer on frozen word vectors and
are ranked per layer, not on the leaderboard. Both carry ``.metadata`` (name, type, description,
main score), read the same way everywhere; what differs is the runner, which the harness keys by
:func:`task_kind`.
"""
from __future__ import annotations

from ..probes.tasks import TASK_TYPE as PROBE_TYPE

MTEB = "mteb"
PROBE = "probe"


def task_kind(task) -> str:
    """``probe`` for a word-level probe, ``mteb`` for every other task."""
    return PROBE if task.metadata.type == PROBE_TYPE else MTEB
