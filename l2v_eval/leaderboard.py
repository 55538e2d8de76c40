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

A results folder is either one suite's folder (``results/l2v-mini``: ``scores.parquet`` /
``scores.csv``) or a folder of them (``results/``); each suite is ranked on its own. A
suite may ship baseline rows in the package (its record in :mod:`l2v_eval.tasks.suites` says
where; the columns of ``scores.csv``); they are ranked beside the folder's own rows.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .intervals import HALF_WIDTH, with_half_widths
from .results import CSV_NAME, KEY, MODEL_KEY, OK, PARQUET_NAME, load_results
from .statistics import borda_rank

MEAN_TASK = "Mean (Task)"
MEAN_TYPE = "Mean (TaskType)"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # shipped files are named relative to it


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
    out["borda_rank"] = borda_rank(matrix)  # as the MTEB leaderboard ranks: points per task, missing tasks none
    # skipna=False: an incomplete model gets no average rather than one over fewer tasks.
    out[MEAN_TASK] = matrix.mean(axis=1, skipna=False)
    type_means = pd.DataFrame({ty: matrix[cols].mean(axis=1, skipna=False) for ty, cols in sorted(by_type.items())})
    out[MEAN_TYPE] = type_means.mean(axis=1, skipna=False)
    out = pd.concat([out, type_means, matrix], axis=1)
    out = out.sort_values([MEAN_TASK, "n_tasks"], ascending=[False, False], na_position="last")
    out.index.name = "label"
    out = out.reset_index()
    out.attrs["type_columns"] = sorted(by_type)
    return out


def expected_tasks(spec: str) -> dict[str, str]:
    """Task name → task type for a ``--tasks`` spec (probe tasks left out: they are ranked per layer)."""
    from .tasks.kinds import MTEB, task_kind
    from .tasks.presets import resolve_tasks

    return {t.metadata.name: t.metadata.type for t in resolve_tasks(spec) if task_kind(t) == MTEB}


# ---------------------------------------------------------------------- suites and shipped baselines
def shipped_baselines_path(suite: str) -> Path | None:
    """The baseline rows the package ships for ``suite`` (its record says where), when it ships any."""
    from .tasks.suites import get_suite

    record = get_suite(suite)
    path = record.baselines if record is not None else None
    return path if path is not None and path.is_file() else None


def shipped_baselines(suite: str) -> pd.DataFrame | None:
    from .tasks.suites import get_suite

    record = get_suite(suite)
    return record.shipped_baselines() if record is not None else None


def with_baselines(frame: pd.DataFrame, baselines: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` plus the baseline rows it does not have itself (same key: the frame's row wins)."""
    if baselines is None or baselines.empty:
        return frame
    combined = pd.concat([baselines, frame], ignore_index=True) if not frame.empty else baselines
    return combined.drop_duplicates(list(KEY), keep="last").reset_index(drop=True)


def _has_table(folder: Path) -> bool:
    return (folder / PARQUET_NAME).is_file() or (folder / CSV_NAME).is_file()


def load_suites(path: str | os.PathLike, baselines: bool = True) -> dict[str, pd.DataFrame]:
    """Suite name → tidy table, for a suite folder, a folder of suite folders, or a table file.
    With ``baselines``, each suite's shipped baseline rows are added."""
    path = Path(path)
    if path.is_file() or _has_table(path):
        tables = {(path.parent if path.is_file() else path).resolve().name: load_results(path)}
    elif path.is_dir():
        tables = {p.name: load_results(p) for p in sorted(path.iterdir()) if p.is_dir() and _has_table(p)}
    else:
        raise FileNotFoundError(f"{str(path)!r} does not exist; give a results folder (e.g. results/ or "
                                f"results/l2v-mini) or a scores.parquet / scores.csv file")
    if not tables:
        raise FileNotFoundError(f"No {PARQUET_NAME} or {CSV_NAME} in {str(path)!r} or its sub-folders; "
                                "run l2v-eval first (it writes results/<suite>/)")
    if baselines:
        tables = {suite: with_baselines(frame, shipped_baselines(suite)) for suite, frame in tables.items()}
    return tables


def build_leaderboards(tables: Mapping[str, pd.DataFrame], tasks: Mapping[str, str] | Sequence[str] | None = None,
                       scale: float = 100.0) -> dict[str, pd.DataFrame]:
    """One leaderboard per suite; suites without any successful MTEB result are left out (all of
    them empty is an error)."""
    boards = {}
    for suite, frame in tables.items():
        try:
            boards[suite] = build_leaderboard(frame, tasks=tasks, scale=scale)
        except ValueError:
            if len(tables) == 1:
                raise
    if not boards:
        raise ValueError("No successful MTEB results to rank in any suite (no main-score rows with status ok)")
    return boards


def rounded(board: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Scores to 2 decimals on the ×100 scale (4 on the raw 0–1 scale)."""
    digits = 2 if scale >= 10 else 4
    floats = board.select_dtypes("float").columns
    return board.assign(**{c: board[c].round(digits) for c in floats})


def format_leaderboard(board: pd.DataFrame, scale: float = 100.0, model_meta: bool = False) -> str:
    """The leaderboard as printed: models, coverage and averages (per-task scores are in the CSV); with
    ``model_meta``, the models' parameters, embedding size, token limit and weight memory too."""
    facts = [c for c in ("n_parameters", "embed_dim", "max_tokens", "memory_mb") if model_meta and c in board]
    def with_spread(column: str) -> list[str]:  # a score, then the half-width of its 95% interval where known
        spread = column + HALF_WIDTH
        return [column, *([spread] if spread in board and board[spread].notna().any() else [])]

    columns = ["label", *facts, "n_tasks", "borda_rank", *with_spread(MEAN_TASK), *with_spread(MEAN_TYPE),
               *[c for ty in board.attrs.get("type_columns", []) for c in with_spread(ty)]]
    shown = board[columns].rename(columns={"n_tasks": "tasks"}).set_index("label")
    shown.index.name = None
    digits = 2 if scale >= 10 else 4
    return shown.to_string(na_rep="-", float_format=lambda v: f"{v:.{digits}f}")


def write_leaderboards(boards: Mapping[str, pd.DataFrame], output: str | os.PathLike, scale: float = 100.0) -> Path:
    """All suites' leaderboards in one CSV (a ``suite`` column first), rounded, written atomically."""
    from l2v_core.files import atomic_write

    table = pd.concat([rounded(b, scale).assign(suite=suite) for suite, b in boards.items()], ignore_index=True)
    table = table[["suite", *[c for c in table.columns if c != "suite"]]]
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path


def write_leaderboard(results_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                      tasks: Mapping[str, str] | Sequence[str] | None = None, scale: float = 100.0,
                      baselines: bool = True) -> Path:
    """Build the leaderboards of ``results_dir`` (a suite folder or a folder of suites) and write them
    as one CSV (default ``RESULTS_DIR/leaderboard.csv``)."""
    return _build_and_write(results_dir, output, tasks, scale, baselines)[1]


def leaderboard_summary(results_dir: str | os.PathLike, output: str | os.PathLike | None = None,
                        tasks: Mapping[str, str] | Sequence[str] | None = None, scale: float = 100.0,
                        baselines: bool = True, model_meta: bool = False) -> str:
    """As :func:`write_leaderboard`, and the text ``l2v-eval leaderboard`` prints: each suite's table
    (rounded; with ``model_meta``, the models' facts too), then the CSV's path."""
    boards, path = _build_and_write(results_dir, output, tasks, scale, baselines)
    parts = [f"{suite} (scores {'x100' if scale >= 10 else '0-1'}; per-task scores in the CSV)\n"
             f"{format_leaderboard(board, scale, model_meta)}" for suite, board in boards.items()]
    return "\n\n".join([*parts, f"Wrote {path}"])


def check_board_output(results_dir: str | os.PathLike, output: str | os.PathLike) -> None:
    """Before anything is read: refuse an output that is one of the tables read (writing there would
    destroy it), a folder, or a place this process cannot write."""
    from l2v_core.files import check_writable_dir

    source, out = Path(results_dir), Path(output)
    folders = [] if source.is_file() else [source, *(sorted(p for p in source.iterdir() if p.is_dir())
                                                     if source.is_dir() else [])]
    tables = [source] if source.is_file() else [f / name for f in folders for name in (PARQUET_NAME, CSV_NAME)]
    for table in tables:
        if table.exists() and table.resolve() == out.resolve():
            raise ValueError(f"The output {str(output)!r} is the results table {str(table)!r} the leaderboard reads; "
                             "writing there would destroy it. Choose another file (default: RESULTS_DIR/leaderboard.csv)")
    if out.is_dir():
        raise ValueError(f"The output {str(output)!r} is a directory; give a CSV file path")
    check_writable_dir(out.parent if str(out.parent) else ".", "The output's folder")


def with_model_meta(board: pd.DataFrame, suite_dir: Path) -> pd.DataFrame:
    """The board plus each model's facts from the ``model_meta.json`` l2v-eval wrote (parameters, embedding
    size, token limit, weight memory, base model; empty for shipped baselines), after ``experiment``."""
    from .model_facts import LEADERBOARD_FIELDS, results_meta

    keys = ["model", "model_revision", "experiment"]
    columns = list(LEADERBOARD_FIELDS.values())
    meta = pd.DataFrame(results_meta(suite_dir), columns=[*keys, *columns]).drop_duplicates(keys, keep="last")
    merged = board.merge(meta, on=keys, how="left")
    for column in ("n_parameters", "embed_dim", "max_tokens"):  # whole numbers, empty where unknown
        merged[column] = pd.to_numeric(merged[column], errors="coerce").round().astype("Int64")
    at = list(board.columns).index("experiment") + 1
    order = [*board.columns[:at], *columns, *board.columns[at:]]
    merged = merged[order]
    merged.attrs = dict(board.attrs)
    return merged


def _suite_dir(results_dir: Path, suite: str) -> Path:
    folder = results_dir.parent if results_dir.is_file() else results_dir
    return folder if _has_table(folder) else folder / suite


def _build_and_write(results_dir, output, tasks, scale, baselines) -> tuple[dict[str, pd.DataFrame], Path]:
    results_dir = Path(results_dir)
    default = (results_dir.parent if results_dir.is_file() else results_dir) / "leaderboard.csv"
    output = output if output is not None else default
    check_board_output(results_dir, output)
    tables = load_suites(results_dir, baselines=baselines)
    boards = build_leaderboards(tables, tasks=tasks, scale=scale)
    boards = {suite: with_model_meta(board, _suite_dir(results_dir, suite)) for suite, board in boards.items()}
    boards = {suite: with_half_widths(board, tables[suite], _suite_dir(results_dir, suite), scale)
              for suite, board in boards.items()}
    return boards, write_leaderboards(boards, output, scale=scale)


# ---------------------------------------------------------------------- after a run: this model vs the baselines
def _short_names(tasks: list[str]) -> dict[str, str]:
    """Task names without their common prefix (``L2VMiniSTS`` → ``STS``) when that leaves every name readable."""
    prefix = os.path.commonprefix(tasks) if len(tasks) > 1 else ""
    if len(prefix) < 3 or any(len(t) - len(prefix) < 2 for t in tasks):
        return {t: t for t in tasks}
    return {t: t[len(prefix):] for t in tasks}


def _measured_with(suite: str) -> str:
    from .tasks.suites import get_suite

    record = get_suite(suite)
    return f", measured with the {record.instructions} instructions" if record is not None else ""


def run_dtype(experiment: str) -> str:
    """The dtype a run used, as its experiment name records it: float32, the reference, is recorded as nothing."""
    found = re.search(r"(?:^|_)dtype_([a-z0-9]+)", experiment or "")
    return found.group(1) if found else "float32"


def comparison_table(ours: pd.DataFrame, baselines: pd.DataFrame, tasks: Sequence[str], suite: str) -> str:
    """A compact table of this run's model (marked ``*``, first) and the suite's shipped baseline
    models: main score ×100 per task, their mean and the dtype each row ran in (bf16 and fp32 rows differ by
    a few tenths); empty when there is nothing to compare."""
    frame = with_baselines(ours, baselines)
    matrix, _ = task_scores(frame)
    columns = [t for t in tasks if t in matrix.columns]
    if matrix.empty or not columns:
        return ""
    rows = main_scores(frame)
    identity = ours[list(MODEL_KEY)].drop_duplicates()
    mine = set(rows.merge(identity, on=list(MODEL_KEY))["label"]) if not identity.empty else set()
    table = (matrix[columns] * 100).rename(columns=_short_names(columns)).rename_axis(index=None, columns=None)
    table["Mean"] = table.mean(axis=1, skipna=False)
    table["dtype"] = rows.drop_duplicates("label").set_index("label")["experiment"].map(run_dtype)
    table = table.assign(_mine=[label in mine for label in table.index]).sort_values(
        ["_mine", "Mean"], ascending=[False, False], na_position="last").drop(columns="_mine")
    table.index = [("* " if label in mine else "  ") + label for label in table.index]
    source = shipped_baselines_path(suite)
    where = f" ({source.relative_to(PACKAGE_ROOT)})" if source is not None else ""
    note = (f"{suite}: main score ×100 per task (higher is better) and their mean; * marks this run, the other "
            f"rows are the baselines shipped with l2v{where}{_measured_with(suite)}." if not baselines.empty else
            f"{suite}: main score ×100 per task (higher is better) and their mean (shipped baselines left out).")
    return note + "\n" + table.to_string(na_rep="-", float_format=lambda v: f"{v:.1f}")
