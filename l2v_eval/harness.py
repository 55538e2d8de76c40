"""Run a model on a list of tasks: mteb tasks through ``mteb.evaluate``, probe tasks
through ``l2v_eval.probes``, every result into the tidy table.

Per task: skip it when the table already has all its splits and subsets (unless
``overwrite``); otherwise load its data (``--data-dir`` first), let mteb evaluate only
what its JSON cache lacks, and write the task's rows at once. A task that fails
becomes a failure row and the run goes on; the summary says what failed.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .model import L2VEncoder, ModelLoadFailed, ModelSpec
from .results import OK, ResultsStore, failure_row, l2v_version, now, rows_from_task_result
from .tasks.instructions import load_instructions
from .tasks.local import MissingDatasetError, dataset_source
from .tasks.presets import PROBE_TASK_NAMES, PROBE_TASK_TYPE, TaskRef, resolve_tasks, task_name

logger = logging.getLogger(__name__)

MISSING_DATA = "missing-data"
ERROR = "error"
SKIPPED = "skipped"


@dataclass
class EvalConfig:
    """The arguments of one ``l2v-eval`` run (validated on creation)."""

    model: str
    tasks: str
    output: Path = Path("results")
    instructions: str = "default"
    batch_size: int = 32
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    data_dir: Path | None = None
    overwrite: bool = False
    peft: tuple[str, ...] = ()
    pooling: str | None = None
    name: str | None = None
    probe_data: Path | None = None
    probe_layers: tuple[int, ...] | None = None
    seed: int = 42
    show_progress: bool = True
    causal: bool = False  # keep causal attention (a separate experiment in the results)
    revision: str | None = None  # branch, tag or commit of a Hub --model
    offline: bool = False  # read only local files (Hub cache, --data-dir), whatever HF_HUB_OFFLINE says

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None
        self.probe_data = Path(self.probe_data) if self.probe_data is not None else None
        self.peft = tuple(self.peft or ())
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"--data-dir {str(self.data_dir)!r} is not a directory")
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {str(self.output)!r} exists and is not a directory")
        from .results import check_output  # writable folder, readable table: fail before the model loads
        check_output(self.output)
        if self.probe_layers is not None:
            self.probe_layers = tuple(int(x) for x in self.probe_layers)
            if any(x < 0 for x in self.probe_layers):
                raise ValueError(f"probe layers must be >= 0, got {self.probe_layers}")

    def model_spec(self) -> ModelSpec:
        return ModelSpec(self.model, peft=self.peft, pooling=self.pooling, max_length=self.max_length,
                         device=self.device, dtype=self.dtype, name=self.name,
                         instructions=load_instructions(self.instructions), causal=self.causal,
                         hub_revision=self.revision)


@dataclass
class TaskOutcome:
    task: str
    status: str  # ok | skipped | error | missing-data
    main_score: float | None = None
    main_metric: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status not in (OK, SKIPPED)


@dataclass
class RunSummary:
    model: str
    model_revision: str
    experiment: str
    output: Path
    outcomes: list[TaskOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def format(self) -> str:
        counts = {s: sum(o.status == s for o in self.outcomes) for s in (OK, SKIPPED)}
        head = (f"{self.model} @ {self.model_revision}{' [' + self.experiment + ']' if self.experiment else ''}: "
                f"{len(self.outcomes)} task(s), {counts[OK]} evaluated, {counts[SKIPPED]} already done, "
                f"{len(self.failed)} failed; results in {self.output}")
        width = max([len(o.task) for o in self.outcomes] + [4])
        lines = [head]
        for o in self.outcomes:
            if o.failed:
                detail = o.error
            elif o.main_score is not None and not math.isnan(o.main_score):
                detail = f"{o.main_metric}={o.main_score:.4f}"
            else:
                detail = ""
            lines.append(f"  {o.task:<{width}}  {o.status:<12} {detail}  ({o.seconds:.1f} s)")
        return "\n".join(lines)


def _split_data(task, split: str, subset: str):
    data = task.dataset
    if subset not in data and subset == "default":
        return data[split]
    return data[subset][split]


def _count(data) -> int | None:
    if isinstance(data, Mapping) and "queries" in data and "corpus" in data:
        return len(data["queries"]) + len(data["corpus"])
    columns = getattr(data, "column_names", None)
    if columns is None:
        return None
    if "sentences" in columns and len(data) and isinstance(data[0]["sentences"], list):
        return sum(len(s) for s in data["sentences"])  # legacy clustering: one row per set of sentences
    return len(data)


def count_samples(task) -> dict[tuple[str, str], int | None]:
    """Texts (or pairs) per (split, subset) in a loaded task, counted as mteb's statistics count them."""
    counts = {}
    for split in task.eval_splits:
        for subset in task.hf_subsets:
            try:
                counts[(split, subset)] = _count(_split_data(task, split, subset))
            except (KeyError, TypeError, IndexError):
                counts[(split, subset)] = None
    return counts


def published_samples(task) -> dict[tuple[str, str], int | None]:
    """Sample counts from the statistics mteb ships with a task, for results read from the cache."""
    counts = {}
    try:
        stats = task.metadata.descriptive_stats or {}
    except Exception:  # tasks without a statistics file
        stats = {}
    for split in task.eval_splits:
        split_stats = stats.get(split) or {}
        per_subset = split_stats.get("hf_subset_descriptive_stats") or {}
        for subset in task.hf_subsets:
            entry = per_subset.get(subset) or (split_stats if len(task.hf_subsets) == 1 else {})
            counts[(split, subset)] = entry.get("num_samples")
    return counts


def _main_of(rows) -> tuple[float | None, str]:
    mains = [r for r in rows if r.get("is_main_score")]
    if not mains:
        return None, ""
    values = [float(r["value"]) for r in mains]
    return sum(values) / len(values), str(mains[0]["metric"])


def _best_layer(rows) -> tuple[float | None, str]:
    """A probe's headline: its main metric at the best layer."""
    mains = [r for r in rows if r.get("is_main_score")]
    if not mains:
        return None, ""
    best = max(mains, key=lambda r: r["value"])
    return float(best["value"]), f"{best['metric']}@layer{best.get('layer')}"


class Evaluation:
    """One model against a list of tasks, writing into one output folder."""

    def __init__(self, config: EvalConfig, tasks: Sequence[TaskRef] | None = None):
        import mteb

        self.config = config
        self.spec = config.model_spec()
        self.tasks = list(tasks) if tasks is not None else resolve_tasks(config.tasks)
        self.store = ResultsStore(config.output)
        self.cache = mteb.ResultCache(_cache_dir_for_this_rank(config.output))
        self.encoder = L2VEncoder(self.spec, batch_size=config.batch_size, show_progress_bar=config.show_progress)
        self.identity = {"model": self.spec.model_name, "model_revision": self.spec.revision,
                         "experiment": self.spec.experiment}

    def run(self) -> RunSummary:
        summary = RunSummary(output=self.config.output, **self.identity)
        logger.info("Evaluating %s (revision %s%s) on %d task(s)", self.identity["model"],
                    self.identity["model_revision"],
                    f", {self.identity['experiment']}" if self.identity["experiment"] else "", len(self.tasks))
        bar = tqdm(self.tasks, desc="Tasks", unit="task", disable=not self.config.show_progress)
        for task in bar:
            name = task_name(task)
            bar.set_postfix_str(name)
            start = time.monotonic()
            try:
                outcome = self._run_probe(task) if isinstance(task, str) else self._run_mteb(task)
            except ModelLoadFailed:
                raise  # every remaining task would fail the same way
            except MissingDatasetError as err:
                outcome = self._record_failure(task, MISSING_DATA, str(err), start)
            except Exception as err:  # one broken task must not stop the others
                logger.debug("Task %s failed", name, exc_info=True)
                outcome = self._record_failure(task, ERROR, f"{type(err).__name__}: {err}", start)
            outcome.seconds = outcome.seconds or time.monotonic() - start
            self._log(outcome)
            summary.outcomes.append(outcome)
        return summary

    # ------------------------------------------------------------------ mteb tasks
    def _done(self, name: str) -> Any:
        return self.store.completed(self.identity["model"], self.identity["model_revision"],
                                    self.identity["experiment"], name)

    def _run_mteb(self, task) -> TaskOutcome:
        import mteb
        from mteb.abstasks.aggregated_task import AbsTaskAggregate

        name = task.metadata.name
        expected = {(split, subset) for split in task.eval_splits for subset in task.hf_subsets}
        if not self.config.overwrite:
            done = self._done(name)
            if expected <= set(zip(done["split"], done["subset"])):
                score, metric = _main_of(done.to_dict("records"))
                return TaskOutcome(name, SKIPPED, score, metric)

        existing = None if self.config.overwrite else self.cache.load_task_result(name, self.encoder.mteb_model_meta)
        must_compute = existing is None or bool(existing.get_missing_evaluations(task))
        preloaded = False
        n_samples: dict = {}
        with dataset_source(self.config.data_dir, name):
            try:
                if must_compute and not isinstance(task, AbsTaskAggregate):
                    # Loading here (not inside mteb.evaluate) keeps data loading and the model's
                    # first load out of the task's evaluation time, and lets us count samples.
                    if not task.data_loaded:
                        task.load_data()
                        preloaded = True
                    n_samples = count_samples(task)
                if must_compute:
                    _ = self.encoder.model
                result = mteb.evaluate(
                    self.encoder, task, cache=self.cache,
                    overwrite_strategy="always" if self.config.overwrite else "only-missing",
                    raise_error=True, co2_tracker=False, show_progress_bar=False,
                    encode_kwargs={"batch_size": self.config.batch_size,
                                   "show_progress_bar": self.config.show_progress},
                )
            finally:
                if preloaded and task.data_loaded:
                    task.unload_data()
        if result.exceptions:
            raise RuntimeError("; ".join(str(e.exception) for e in result.exceptions))
        # The rows are built from the JSON mteb wrote (scores rounded as mteb saves them), so the
        # table and mteb's results always agree.
        task_result = self.cache.load_task_result(name, self.encoder.mteb_model_meta) or result.task_results[0]
        if not any(n_samples.values()):
            n_samples = published_samples(task)
        rows = rows_from_task_result(task_result, task.metadata, n_samples=n_samples, **self.identity)
        self.store.upsert(rows)
        score, metric = _main_of(rows)
        return TaskOutcome(name, OK, score, metric, seconds=float(task_result.evaluation_time or 0.0))

    # ------------------------------------------------------------------ probes
    def _run_probe(self, name: str) -> TaskOutcome:
        import importlib

        try:
            probes = importlib.import_module(f"{__package__}.probes")
        except ModuleNotFoundError as err:
            if err.name not in ("l2v_eval.probes", f"{__package__}.probes"):
                raise
            raise RuntimeError(
                f"Task {name} needs the probing module l2v_eval.probes, which is not available in this installation"
            ) from None
        if name not in PROBE_TASK_NAMES:
            raise ValueError(f"Unknown probe task {name!r}; probes are {', '.join(PROBE_TASK_NAMES)}")
        layers = self.config.probe_layers
        if not self.config.overwrite:
            done = self._done(name)
            have = set(done["layer"].dropna().astype(int))
            if not done.empty and (layers is None or set(layers) <= have):
                return TaskOutcome(name, SKIPPED, *_best_layer(done.to_dict("records")))
        start = time.monotonic()
        rows = probes.run_probe_task(
            name, encoder=self.encoder.model, model_name=self.identity["model"],
            model_revision=self.identity["model_revision"], data_dir=self.config.probe_data, layers=layers,
            batch_size=self.config.batch_size, cache_dir=self.config.output / "probes", seed=self.config.seed,
        )
        if not rows:
            raise RuntimeError(f"Probe task {name} returned no results")
        stamp = now()
        defaults = {"experiment": self.identity["experiment"], "status": OK, "l2v_version": l2v_version(),
                    "created_at": stamp}
        rows = [{**defaults, **row, "model": self.identity["model"],
                 "model_revision": self.identity["model_revision"], "experiment": self.identity["experiment"]}
                for row in rows]
        self.store.upsert(rows)
        return TaskOutcome(name, OK, *_best_layer(rows), seconds=time.monotonic() - start)

    # ------------------------------------------------------------------ bookkeeping
    def _record_failure(self, task: TaskRef, status: str, error: str, start: float) -> TaskOutcome:
        name = task_name(task)
        task_type = PROBE_TASK_TYPE if isinstance(task, str) else task.metadata.type
        seconds = time.monotonic() - start
        self.store.upsert([failure_row(task=name, task_type=task_type, status=status, error=error,
                                       eval_seconds=seconds, **self.identity)])
        return TaskOutcome(name, status, seconds=seconds, error=error)

    def _log(self, o: TaskOutcome) -> None:
        if o.failed:
            logger.error("%s: %s (%.1f s): %s", o.task, o.status, o.seconds, o.error)
        elif o.status == SKIPPED:
            logger.info("%s: already done, %s=%s", o.task, o.main_metric, _fmt(o.main_score))
        else:
            logger.info("%s: %s=%s in %.1f s", o.task, o.main_metric, _fmt(o.main_score), o.seconds)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def run_evaluation(config: EvalConfig, tasks: Sequence[TaskRef] | None = None) -> RunSummary:
    """Evaluate ``config.model`` on ``tasks`` (default: those ``config.tasks`` names); see the module doc."""
    import contextlib

    from l2v_core.hub import offline_mode

    with offline_mode() if config.offline else contextlib.nullcontext():
        return Evaluation(config, tasks).run()


def download_task_data(spec: str, data_dir: str | os.PathLike) -> list[str]:
    """Fetch every dataset the tasks of ``spec`` read into ``data_dir``, in the layout ``--data-dir``
    reads (needs internet). Bundled and probe tasks are skipped. Returns the task names fetched."""
    from mteb.abstasks.aggregated_task import AbsTaskAggregate

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    from .tasks.mini import MINI_TASK_NAMES

    fetched = []
    for task in resolve_tasks(spec):
        if isinstance(task, str) or task.metadata.name in MINI_TASK_NAMES:
            continue
        parts = list(task.metadata.tasks) if isinstance(task, AbsTaskAggregate) else [task]
        for part in parts:
            with dataset_source(data_dir, part.metadata.name, download=True):
                part.load_data()
            part.unload_data()
            fetched.append(part.metadata.name)
            logger.info("Fetched %s", part.metadata.name)
    return fetched


def _cache_dir_for_this_rank(output: Path) -> Path:
    """Under torchrun every rank runs the same tasks (encoding is sharded inside); only rank 0
    writes into ``output``. Other ranks work on a snapshot of it, so they skip exactly the tasks
    rank 0 skips and never race its writes."""
    import shutil
    import tempfile

    from l2v_core.distributed import world

    rank = world()[0]
    if rank == 0:
        return output
    snapshot = Path(tempfile.mkdtemp(prefix=f"l2v-eval-rank{rank}-"))
    if (output / "results").is_dir():
        shutil.copytree(output / "results", snapshot / "results")
    return snapshot

