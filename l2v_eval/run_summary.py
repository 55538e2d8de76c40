"""What a run reports: one outcome per task, the run's summary as ``l2v-eval`` prints it, and the
interruption that carries what had finished."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .cache_folder import human_bytes
from .predictions import PREDICTIONS_DIR
from .results import OK

MISSING_DATA = "missing-data"
ERROR = "error"
SKIPPED = "skipped"


@dataclass
class TaskOutcome:
    task: str
    status: str  # ok | skipped | error | missing-data
    main_score: float | None = None
    main_metric: str = ""
    seconds: float = 0.0  # wall time of the task, model and data loading included
    error: str = ""
    encoded: int | None = None  # texts the model encoded (None: not counted, e.g. without a cache)
    reused: int | None = None  # texts served from the embedding cache (or repeated within the task)
    load_seconds: float = 0.0  # the model load this task paid for

    @property
    def failed(self) -> bool:
        return self.status not in (OK, SKIPPED)

    def detail(self) -> str:
        if self.failed:
            return self.error
        # x100, as every table l2v prints (and the MTEB leaderboard)
        score = f"{self.main_metric}={100 * self.main_score:.2f}" if _known(self.main_score) else ""
        if self.status == SKIPPED:
            return f"{score}  already done".strip()
        texts = f"{self.encoded:,} texts encoded, {self.reused:,} reused" if self.encoded is not None else ""
        return "  ".join(part for part in (score, texts) if part)

    def timing(self) -> str:
        load = f", model load {self.load_seconds:.1f} s" if self.load_seconds > 0 else ""
        return f"({self.seconds:.1f} s{load})"


@dataclass
class RunSummary:
    model: str
    model_revision: str
    experiment: str
    output: Path
    outcomes: list[TaskOutcome] = field(default_factory=list)
    embedding_cache: Path | None = None
    embedding_cache_bytes: int = 0
    predictions_bytes: int = 0  # per-unit predictions and gold kept under <output>/predictions
    comparison: str = ""  # the suite's shipped baselines next to this model, when the suite ships any
    rank: int = 0

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def format(self) -> str:
        if self.rank != 0:
            return f"rank {self.rank}: done ({len(self.failed)} failed); rank 0 prints the summary"
        counts = {s: sum(o.status == s for o in self.outcomes) for s in (OK, SKIPPED)}
        head = (f"{self.model} @ {self.model_revision}{' [' + self.experiment + ']' if self.experiment else ''}: "
                f"{len(self.outcomes)} task(s), {counts[OK]} evaluated, {counts[SKIPPED]} already done, "
                f"{len(self.failed)} failed; results in {self.output}")
        width = max([len(o.task) for o in self.outcomes] + [4])
        lines = [head]
        for o in self.outcomes:
            lines.append(f"  {o.task:<{width}}  {o.status:<12} {o.detail()}  {o.timing()}")
        if self.embedding_cache is not None:
            lines.append(f"Embedding cache: {self.embedding_cache} "
                         f"({human_bytes(self.embedding_cache_bytes)}; `l2v-eval cache info` lists it)")
        if self.predictions_bytes:
            lines.append(f"Predictions: {self.output / PREDICTIONS_DIR} ({human_bytes(self.predictions_bytes)}; "
                         "`l2v-eval compare` reads them)")
        if self.comparison:
            lines.extend(["", self.comparison])
        return "\n".join(lines)


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what had finished (every finished task is already in the table)."""

    def __init__(self, summary: RunSummary, n_tasks: int):
        super().__init__()
        self.summary, self.n_tasks = summary, n_tasks

    def message(self) -> str:
        done = sum(not o.failed for o in self.summary.outcomes)
        return (f"interrupted: {done} of {self.n_tasks} task(s) finished, their results are in "
                f"{self.summary.output}; re-running the same command resumes (finished tasks are skipped, vectors "
                "already encoded are read from the embedding cache)")


def _known(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def main_of(rows) -> tuple[float | None, str]:
    """An mteb task's headline: its main score, averaged over splits and subsets."""
    mains = [r for r in rows if r.get("is_main_score")]
    if not mains:
        return None, ""
    values = [float(r["value"]) for r in mains]
    return sum(values) / len(values), str(mains[0]["metric"])


def best_layer(rows) -> tuple[float | None, str]:
    """A probe's headline: its main metric at the best layer."""
    mains = [r for r in rows if r.get("is_main_score")]
    if not mains:
        return None, ""
    best = max(mains, key=lambda r: r["value"])
    return float(best["value"]), f"{best['metric']}@layer{best.get('layer')}"
