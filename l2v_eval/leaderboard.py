"""Leaderboard: one row per model from the tidy table, averaged the way the MTEB leaderboard does.

* A task's score is its main score averaged over the task's splits and subsets.
* A model that lacks a (split, subset) of a task that another model has is missing
  that task (mteb nulls such partial coverage rather than averaging over less).
* Per task type: the mean of its tasks' scores, left empty if the model misses any.
* ``Mean (Task)``: the mean over all tasks; ``Mean (TaskType)``: the mean over the
  task-type means. Both are left empty for an incomplete model, which is flagged in
  ``complete`` and ``missing_tasks`` instead of being silently averaged over fewer tasks.

Probe rows (``layer`` set) are not MTEB tasks and stay out. Scores are reported ×100
as on the MTEB leaderboard (``scale=1`` keeps the raw 0–1 values).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .results import OK, load_results

MEAN_TASK = "Mean (Task)"
MEAN_TYPE = "Mean (TaskType)"


def model_labels(frame: pd.DataFrame) -> pd.Series:
    """A readable, unique label per (model, revision, experiment): the name, plus the experiment
    when set, plus the revision when one name has several."""
    keys = frame[["model", "model_revision", "experiment"]].drop_duplicates()
    labels = {}
    for (model, experiment), group in keys.groupby(["model", "experiment"], sort=False):
        for _, row in group.iterrows():
            label = model + (f" [{experiment}]" if experiment else "")
            if len(group) > 1:
                label += f" @{row['model_revision'][:8]}"
            labels[(row["model"], row["model_revision"], row["experiment"])] = label
    return pd.Series([labels[k] for k in zip(frame["model"], frame["model_revision"], frame["experiment"])],
                     index=frame.index, dtype="string")


def main_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Successful MTEB main-score rows, with a ``label`` column."""
    rows = frame[(frame["status"] == OK) & frame["is_main_score"].fillna(False).astype(bool) & frame["layer"].isna()]
    rows = rows.copy()
    rows["label"] = model_labels(rows) if not rows.empty else pd.Series(dtype="string")
    return rows


def task_scores(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """(label × task matrix of task scores with partial coverage nulled, task → task type)."""
    rows = main_scores(frame)
    if rows.empty:
        return pd.DataFrame(), {}
    types = dict(zip(rows["task"], rows["task_type"]))
    required = rows.groupby("task")[["split", "subset"]].apply(lambda g: len(g.drop_duplicates()))
    have = rows.groupby(["label", "task"])[["split", "subset"]].apply(lambda g: len(g.drop_duplicates()))
    score = rows.groupby(["label", "task"])["value"].mean()
    complete = have >= required.reindex(have.index.get_level_values("task")).to_numpy()
    score = score.where(complete)
    return score.unstack("task"), types


def build_leaderboard(frame: pd.DataFrame, tasks: Mapping[str, str] | Sequence[str] | None = None,
                      scale: float = 100.0) -> pd.DataFrame:
    """The leaderboard table.

    ``tasks`` fixes the task set (names, or name → task type for tasks no model has yet; see
    :func:`expected_tasks`); by default it is every task any model has.
    """
    matrix, types = task_scores(frame)
    if matrix.empty:
        raise ValueError("No successful MTEB results to rank (the table has no main-score rows with status ok)")
    if tasks is not None:
        if isinstance(tasks, Mapping):
            types = {**dict(tasks), **types}
        matrix = matrix.reindex(columns=list(tasks))
    matrix = matrix * scale
    task_cols = list(matrix.columns)
    by_type: dict[str, list[str]] = {}
    for t in task_cols:
        by_type.setdefault(types.get(t) or "Unknown", []).append(t)

    out = pd.DataFrame(index=matrix.index)
    identity = main_scores(frame).drop_duplicates("label").set_index("label")
    out["model"] = identity["model"].reindex(out.index)
    out["model_revision"] = identity["model_revision"].reindex(out.index)
    out["experiment"] = identity["experiment"].reindex(out.index)
    missing = matrix.isna()
    out["n_tasks"] = (~missing).sum(axis=1)
    out["complete"] = ~missing.any(axis=1)
    out["missing_tasks"] = [", ".join(c for c in task_cols if missing.loc[i, c]) for i in matrix.index]
    # skipna=False: an incomplete model gets no average rather than one over fewer tasks.
    out[MEAN_TASK] = matrix.mean(axis=1, skipna=False)
    type_means = pd.DataFrame({ty: matrix[cols].mean(axis=1, skipna=False) for ty, cols in sorted(by_type.items())})
    out[MEAN_TYPE] = type_means.mean(axis=1, skipna=False)
    out = pd.concat([out, type_means, matrix], axis=1)
    out = out.sort_values([MEAN_TASK, "n_tasks"], ascending=[False, False], na_position="last")
    out.index.name = "label"
    return out.reset_index()


def expected_tasks(spec: str) -> dict[str, str]:
    """Task name → task type for a ``--tasks`` spec (probe tasks left out)."""
    from .tasks.presets import resolve_tasks

    return {t.metadata.name: t.metadata.type for t in resolve_tasks(spec) if not isinstance(t, str)}


def write_leaderboard(results_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                      tasks: Mapping[str, str] | Sequence[str] | None = None, scale: float = 100.0) -> Path:
    """Build the leaderboard from ``results_dir`` and write it as CSV (atomically)."""
    from .results import atomic_write

    board = build_leaderboard(load_results(results_dir), tasks=tasks, scale=scale)
    path = Path(output) if output is not None else Path(results_dir) / "leaderboard.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: board.to_csv(p, index=False))
    return path
