"""A training run at a glance: loss and evaluation scores against step (``l2v-train report RUN_DIR``).

Reads ``metrics.csv`` and ``l2v_train.json`` of an output_dir and writes ``report.png``
(loss, and the scores of ``eval_tasks`` when the run had them) and ``report.md`` (what
was trained, how fast, and the scores) next to them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..files import atomic_write
from .config import ConfigError
from .run import EVAL_MEAN, EVAL_PREFIX, METRICS, RUN_CONFIG

PLOT = "report.png"
MARKDOWN = "report.md"


@dataclass
class TrainingReport:
    markdown: Path
    plot: Path


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {METRICS}; give the output_dir of an l2v-train run")
    try:
        metrics = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not a readable CSV: {err}") from None
    missing = {"step", "loss", "lr", "tokens", "seconds"} - set(metrics.columns)
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; it was not written by l2v-train")
    if metrics.empty:
        raise ConfigError(f"{path} holds no steps yet")
    return metrics


def score_columns(metrics: pd.DataFrame) -> list[str]:
    """Task score columns, then their mean, for the columns that hold at least one score."""
    tasks = [c for c in metrics.columns if c.startswith(EVAL_PREFIX) and c != EVAL_MEAN]
    return [c for c in [*tasks, EVAL_MEAN] if c in metrics and metrics[c].notna().any()]


def _plot(metrics: pd.DataFrame, scores: list[str], title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6.5 if scores else 3.8), layout="constrained")
    axes = fig.subplots(2 if scores else 1, 1, sharex=True, squeeze=False)[:, 0]
    loss = axes[0]
    window = max(1, len(metrics) // 20)
    loss.plot(metrics.step, metrics.loss, color="tab:blue", alpha=0.35 if window > 1 else 1.0, linewidth=1,
              label="loss")
    if window > 1:
        smooth = metrics.loss.rolling(window, min_periods=1).mean()
        loss.plot(metrics.step, smooth, color="tab:blue", linewidth=2, label=f"mean of {window} steps")
    loss.set_ylabel("training loss")
    loss.legend(loc="upper right")
    loss.set_title(title)
    if scores:
        evaluated = metrics.dropna(subset=scores, how="all")
        for column in scores:
            mean = column == EVAL_MEAN
            axes[1].plot(evaluated.step, evaluated[column], marker="o", markersize=3,
                         linewidth=2.5 if mean else 1.2, color="black" if mean else None,
                         label="mean" if mean else column[len(EVAL_PREFIX):])
        axes[1].set_ylabel("main score")
        axes[1].legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _score_table(metrics: pd.DataFrame, scores: list[str]) -> list[str]:
    evaluated = metrics.dropna(subset=scores, how="all")
    first, last = evaluated.iloc[0], evaluated.iloc[-1]
    lines = ["| task | first (step {}) | last (step {}) | best | at step |".format(int(first.step), int(last.step)),
             "|---|---|---|---|---|"]
    for column in scores:
        best = evaluated.loc[evaluated[column].idxmax()] if evaluated[column].notna().any() else None
        name = "**mean**" if column == EVAL_MEAN else column[len(EVAL_PREFIX):]
        lines.append(f"| {name} | {_fmt(first[column])} | {_fmt(last[column])} | "
                     f"{_fmt(None if best is None else best[column])} | {'' if best is None else int(best.step)} |")
    return lines


def _markdown(run_dir: Path, metrics: pd.DataFrame, scores: list[str], settings: dict) -> str:
    stage = settings.get("stage", "?")
    seconds, tokens = float(metrics.seconds.sum()), int(metrics.tokens.sum())
    last = metrics.iloc[-1]
    lines = [f"# Training report: {stage}, {run_dir.name}", "",
             f"![loss and scores against step]({PLOT})", "",
             "| | |", "|---|---|",
             f"| base model | `{settings.get('base_model', '?')}` |",
             f"| steps | {int(last.step)} of {settings.get('max_steps', '?')} |",
             f"| global batch | {settings.get('global_batch', '?')} x {settings.get('gradient_accumulation_steps', 1)}"
             " accumulation |",
             f"| learning rate | {settings.get('learning_rate', '?')} ({settings.get('lr_scheduler', '?')}) |",
             f"| loss | first {metrics.loss.iloc[0]:.4f}, last {last.loss:.4f}, lowest {metrics.loss.min():.4f} |",
             f"| training time | {seconds:.0f} s ({seconds / len(metrics):.2f} s/step, "
             f"{tokens / seconds if seconds else 0:.0f} tokens/s, {settings.get('processes', 1)} process(es)) |", ""]
    if scores:
        lines += [f"Evaluation on `{settings.get('eval_tasks')}`: each task's main score (mteb's `main_score`), "
                  "scored on the encoder being trained.", "", *_score_table(metrics, scores), ""]
    else:
        lines += ["No evaluation during this run (set `eval_tasks`, and `eval_steps` for scores along the way).", ""]
    return "\n".join(lines)


def write_training_report(run_dir: str | Path) -> TrainingReport:
    """Write ``report.png`` and ``report.md`` into ``run_dir`` (an l2v-train output_dir)."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    settings_file = run_dir / RUN_CONFIG
    try:
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    except ValueError as err:
        raise ConfigError(f"{settings_file} is not valid JSON: {err}") from None
    scores = score_columns(metrics)
    _plot(metrics, scores, f"{settings.get('stage', 'training')}: {run_dir.name}", run_dir / PLOT)
    text = _markdown(run_dir, metrics, scores, settings)
    atomic_write(run_dir / MARKDOWN, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return TrainingReport(markdown=run_dir / MARKDOWN, plot=run_dir / PLOT)
