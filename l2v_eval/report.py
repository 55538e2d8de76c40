"""Markdown + HTML report of a results folder, with matplotlib plots.

The report holds: the models and their averages, a bar chart of task-type means per
model, one bar chart per task type (per task), the per-task table, the probe curves
(value against layer, per probe task and model) when the table has probe rows, and
the failures; for a folder of suites, one such section per suite (with the suite's
shipped baselines, see :mod:`l2v_eval.leaderboard`). Both documents are built from one
list of blocks, so they always agree.

Bars carry their values; the y axis always shows 0 and the whole ×100 scale (0–100,
0–1 for probe curves), so a score near zero looks near zero instead of filling the chart.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2v_core.files import atomic_write, check_writable_dir

from .intervals import half_widths, type_half_widths
from .leaderboard import (MEAN_TASK, MEAN_TYPE, _suite_dir, build_leaderboard, load_suites, model_labels,
                          task_scores)
from .results import OK


@dataclass
class Block:
    kind: str  # heading | text | table | image
    content: object
    level: int = 2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "plot"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (bool,)):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _md(text: str) -> str:
    """Text for Markdown: HTML in model names or errors is shown, never rendered (as in the HTML report)."""
    return html.escape(text, quote=False)


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [_md(str(c)) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md(_fmt(v)).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _value_range(values, natural_top: float, room: float = 0.08) -> tuple[float, float]:
    """Y limits that hold 0, the scale's natural top and every value, with ``room`` for labels."""
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(natural_top, float(finite.max())) if finite.size else natural_top
    pad = room * (high - low)
    return (low - pad if low < 0 else 0.0), high + pad


def _legend_outside(ax) -> None:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _bar_chart(data: pd.DataFrame, title: str, ylabel: str, path: Path, natural_top: float = 100.0,
               errors: pd.DataFrame | None = None) -> None:
    """Grouped bars: one group per row of ``data`` (index), one bar per column (model), each labelled;
    ``errors`` (same shape): half-widths of 95% intervals, drawn as error bars where known."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state in a library call

    groups, models = list(data.index), list(data.columns)
    width = 0.8 / max(len(models), 1)
    fig = Figure(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(models) / 3) + 2), 4.5))
    ax = fig.subplots()
    x = np.arange(len(groups))
    values = data.astype(float).to_numpy()
    upright = len(models) > 3  # side by side, horizontal labels of many bars would overlap
    spread = (np.nan_to_num(errors.reindex(index=groups, columns=models).astype(float).to_numpy())
              if errors is not None else np.zeros_like(values))
    for i, model in enumerate(models):
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values[:, i], width, label=model,
                      yerr=spread[:, i], capsize=2, error_kw={"linewidth": 0.8})
        ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "" for v in values[:, i]],
                     fontsize="x-small", padding=2, rotation=90 if upright else 0)
    ax.set_xticks(x, [str(g) for g in groups], rotation=30 if len(groups) > 4 else 0,
                  ha="right" if len(groups) > 4 else "center")
    ax.set_ylim(*_value_range(values, natural_top, room=0.14 if upright else 0.08))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.5)
    _legend_outside(ax)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _line_chart(frame: pd.DataFrame, title: str, ylabel: str, path: Path) -> None:
    """Value against layer, one line per label; probe metrics are 0–1."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, group in frame.groupby("label", sort=True):
        group = group.sort_values("layer")
        ax.plot(group["layer"].astype(int), group["value"].astype(float), marker="o", label=str(label))
    ax.set_ylim(*_value_range(frame["value"].astype(float), 1.0))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _probe_rows(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[(frame["status"] == OK) & frame["layer"].notna()].copy()
    if rows.empty:
        return rows
    # Plot each probe's main metric; a probe that flags none is plotted with all its metrics.
    main = rows["is_main_score"].fillna(False).astype(bool)
    has_main = main.groupby(rows["task"]).transform("any")
    rows = rows[main | ~has_main]
    rows["label"] = model_labels(rows)
    # One value per (model, task, layer): the mean over splits/subsets, as for MTEB tasks.
    return (rows.groupby(["label", "task", "layer", "metric"], as_index=False)["value"].mean())


def build_blocks(frame: pd.DataFrame, out_dir: Path, title: str | None, level: int = 2,
                 prefix: str = "", intro: str = "", suite_dir: Path | None = None) -> list[Block]:
    """The report of one suite's table. ``level``: its section headings' level; ``prefix``: plot file
    name prefix (several suites share one folder); ``intro``: text before the counts; ``suite_dir``: the
    suite's results folder, whose kept predictions mark the models not distinguishable from each task's best."""
    blocks = []
    if title:
        blocks += [Block("heading", title, level - 1)]
    # Counted as the tables label them: one model run causal and bidirectional is two rows.
    n_models = len(frame[["model", "model_revision", "experiment"]].drop_duplicates())
    blocks.append(Block("text", f"{intro}{n_models} model(s) and {frame['task'].nunique()} "
                                "task(s). Scores are ×100."))
    blocks += _mteb_blocks(frame, out_dir, level, prefix, suite_dir)
    blocks += _probe_blocks(frame, out_dir, level, prefix)
    failures = frame[frame["status"] != OK]
    if not failures.empty:
        blocks.append(Block("heading", "Failures", level))
        fail = failures.assign(label=model_labels(failures))[["label", "task", "status", "error"]]
        blocks.append(Block("table", fail.rename(columns={"label": "model"})))
    return blocks


def _mteb_blocks(frame: pd.DataFrame, out_dir: Path, level: int, prefix: str,
                 suite_dir: Path | None = None) -> list[Block]:
    matrix, types = task_scores(frame)
    if matrix.empty:
        return []
    board = build_leaderboard(frame)
    type_cols = sorted(set(types.values()))
    summary = board[["label", "model_revision", "n_tasks", "complete", MEAN_TASK, MEAN_TYPE, *type_cols]]
    blocks = [Block("heading", "Summary", level),
              Block("table", summary.rename(columns={"label": "model", "model_revision": "revision"}))]
    incomplete = board[~board["complete"]]
    if not incomplete.empty:
        blocks.append(Block("text", "Averages are left empty for models missing tasks: "
                            + "; ".join(f"{r.label} lacks {r.missing_tasks}" for r in incomplete.itertuples())))
    # Type means are plotted over the tasks each model has, so partial runs still show.
    scaled = matrix * 100
    by_type = pd.DataFrame({ty: scaled[[t for t in scaled.columns if types[t] == ty]].mean(axis=1)
                            for ty in type_cols}).T
    name = f"{prefix}task_types.png"
    _bar_chart(by_type, "Mean main score per task type", "score ×100", out_dir / name,
               errors=type_half_widths(suite_dir, types, list(by_type.columns)))
    blocks += [Block("image", (name, "Mean main score per task type")), Block("heading", "Per task", level)]
    for ty in type_cols:
        tasks = [t for t in scaled.columns if types[t] == ty]
        name = f"{prefix}type_{_slug(ty)}.png"
        _bar_chart(scaled[tasks].T, f"{ty}: main score per task", "score ×100", out_dir / name,
                   errors=half_widths(frame).T)  # the 95% intervals of the tidy table
        blocks += [Block("heading", ty, level + 1), Block("image", (name, f"{ty} tasks"))]
    per_task = scaled.T
    per_task.insert(0, "type", [types[t] for t in per_task.index])
    if suite_dir is not None:  # paired bootstrap against the task's best model, from kept predictions
        from .comparison import tied_with_best

        tied = tied_with_best(suite_dir)
        per_task["best"] = [scaled[t].idxmax() if t in tied else "" for t in per_task.index]
        per_task["not distinguishable from the best"] = [", ".join(tied.get(t, [])) for t in per_task.index]
    per_task = per_task.sort_values(["type"], kind="stable").reset_index(names="task")
    return blocks + [Block("heading", "Scores per task", level), Block("table", per_task)]


def _probe_blocks(frame: pd.DataFrame, out_dir: Path, level: int, prefix: str) -> list[Block]:
    probes = _probe_rows(frame)
    if probes.empty:
        return []
    blocks = [Block("heading", "Probes per layer", level)]
    for task, group in probes.groupby("task", sort=True):
        metric = ", ".join(sorted(group["metric"].unique()))
        if group["metric"].nunique() > 1:
            group = group.assign(label=group["label"] + " · " + group["metric"])
        name = f"{prefix}{_slug(task)}.png"
        _line_chart(group, f"{task} ({metric}) by layer", metric, out_dir / name)
        blocks += [Block("heading", task, level + 1), Block("image", (name, f"{task} by layer"))]
        best = group.loc[group.groupby("label")["value"].idxmax(), ["label", "layer", "value"]]
        blocks.append(Block("table", best.rename(columns={"label": "model", "layer": "best layer", "value": metric})))
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if b.kind == "heading":
            parts.append("#" * b.level + " " + _md(str(b.content)))
        elif b.kind == "text":
            parts.append(_md(str(b.content)))
        elif b.kind == "table":
            parts.append(markdown_table(b.content))
        elif b.kind == "image":
            file, alt = b.content
            parts.append(f"![{alt}]({file})")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], title: str) -> str:
    parts = []
    for b in blocks:
        if b.kind == "heading":
            parts.append(f"<h{b.level}>{html.escape(str(b.content))}</h{b.level}>")
        elif b.kind == "text":
            parts.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "table":
            parts.append(html_table(b.content))
        elif b.kind == "image":
            file, alt = b.content
            parts.append(f'<img src="{html.escape(file)}" alt="{html.escape(alt)}">')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _described(suite: str) -> str:
    """A known suite's description (its record in :mod:`l2v_eval.tasks.suites`), as a sentence before the counts."""
    from .tasks.suites import get_suite

    record = get_suite(suite)
    return f"{record.description} " if record is not None else ""


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike, title: str | None = None,
                 baselines: bool = True) -> Path:
    """Write ``report.md``, ``report.html`` and the plots into ``out_dir``; returns the Markdown path
    (the HTML is beside it). ``results_dir``: a suite folder, a folder of suites, or a table file."""
    out_dir = Path(out_dir)
    check_writable_dir(out_dir, "The report folder")  # before any plot is drawn
    tables = load_suites(results_dir, baselines=baselines)
    if all(frame.empty for frame in tables.values()):
        raise ValueError(f"The results in {str(results_dir)!r} are empty; nothing to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"l2v evaluation report: {out_dir.name}"
    stamp = f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    if len(tables) == 1:
        ((suite, frame),) = tables.items()
        intro = f"{_described(suite)}{stamp} from "
        blocks = [Block("heading", title, 1),
                  *build_blocks(frame, out_dir, None, intro=intro, suite_dir=_suite_dir(Path(results_dir), suite))]
    else:
        blocks = [Block("heading", title, 1), Block("text", f"{stamp}; one section per suite.")]
        for suite, frame in tables.items():
            blocks += [Block("heading", suite, 2),
                       *build_blocks(frame, out_dir, None, 3, f"{_slug(suite)}_", intro=_described(suite),
                                     suite_dir=_suite_dir(Path(results_dir), suite))]
    md_path = out_dir / "report.md"
    atomic_write(md_path, lambda p: Path(p).write_text(render_markdown(blocks), encoding="utf-8"))
    atomic_write(out_dir / "report.html", lambda p: Path(p).write_text(render_html(blocks, title), encoding="utf-8"))
    return md_path
