"""Run a model on a list of tasks: mteb tasks through ``mteb.evaluate``, probe tasks
through their own ``evaluate``, every result into the tidy table.

Per task: skip it when the table already has all its splits and subsets (unless
``overwrite``) and its mteb JSON reads back; otherwise load its data (``--data-dir``
first), let mteb evaluate only what its JSON lacks, and write the task's rows at once.
Vectors go through the embedding cache (:mod:`l2v_eval.embedding_cache`), so a killed
run resumes mid-corpus and no text is encoded twice. A task that fails becomes a
failure row and the run goes on; the summary says what failed.

Output folder (``results/<suite>`` by default)::

    scores.parquet, scores.csv     the tidy table
    mteb/results/<org__model>/<revision>/<Task>.json   mteb's own result cache layout
    embedding-cache/               vectors (see l2v_eval.embedding_cache)
    probes/                        per-layer word features of the probe tasks
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from .cache_folder import check_cache_folder, folder_bytes, human_bytes
from .embedding_cache import DEFAULT_CHUNK_TEXTS, CachedEncoder, TaskProgress
from .model import L2VEncoder, ModelLoadFailed, ModelSpec
from .intervals import with_intervals
from .predictions import PREDICTIONS_DIR, predictions_folder, save_gold
from .results import (OK, ResultsStore, ResultsTableError, failure_row, l2v_version, now, record_instructions,
                      rows_from_task_result)
from .tasks.instructions import load_instructions, task_roles
from .tasks.local import MissingDatasetError, dataset_source
from .tasks.presets import BUNDLED_TASK_NAMES, PRESETS, TASK_TYPES, ProbeTask, TaskRef, resolve_tasks, task_name

logger = logging.getLogger(__name__)

MISSING_DATA = "missing-data"
ERROR = "error"
SKIPPED = "skipped"
RESULTS_ROOT = Path("results")
MTEB_DIR = "mteb"
EMBEDDING_CACHE_DIR = "embedding-cache"
# Deprecation warnings raised inside libraries we call, about code users cannot change.
QUIET_WARNINGS = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),  # peft reads it while loading an adapter
)
# Task types whose rows are pairs of texts (two texts encoded per sample).
PAIRED_TYPES = {"STS", "PairClassification", "BitextMining"}


def suite_name(spec: str) -> str:
    """The folder a ``--tasks`` spec writes to by default: the preset or task type it names, else ``custom``."""
    spec = (spec or "").strip()
    return spec if spec in PRESETS or spec.lower() in TASK_TYPES else "custom"


def default_output(spec: str) -> Path:
    return RESULTS_ROOT / suite_name(spec)


@dataclass
class EvalConfig:
    """The arguments of one ``l2v-eval`` run (validated on creation)."""

    model: str
    tasks: str
    output: Path | None = None  # default: results/<suite>
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
    embedding_cache: Path | str | None = None  # default: <output>/embedding-cache; "none" turns it off
    cache_chunk_texts: int = DEFAULT_CHUNK_TEXTS
    baselines: bool = True  # the suite's shipped baselines in the table printed at the end

    def __post_init__(self) -> None:
        self.output = Path(self.output) if self.output is not None else default_output(self.tasks)
        self.data_dir = Path(self.data_dir) if self.data_dir is not None else None
        self.probe_data = Path(self.probe_data) if self.probe_data is not None else None
        if isinstance(self.embedding_cache, str) and self.embedding_cache.lower() == "none":
            self.embedding_cache = None
        elif self.embedding_cache is None:
            self.embedding_cache = self.output / EMBEDDING_CACHE_DIR
        else:
            self.embedding_cache = Path(self.embedding_cache)
        self.peft = tuple(self.peft or ())
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.cache_chunk_texts, int) or self.cache_chunk_texts < 1:
            raise ValueError(f"cache_chunk_texts must be a positive integer, got {self.cache_chunk_texts!r}")
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"--data-dir {str(self.data_dir)!r} is not a directory")
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {str(self.output)!r} exists and is not a directory")
        from .results import check_output  # writable folder, readable table: fail before the model loads
        check_output(self.output)
        if self.embedding_cache is not None:
            check_cache_folder(self.embedding_cache)  # l2v's own or new, writable: fail before the model loads
        self._refuse_folders_inside_the_model()
        if self.probe_layers is not None:
            self.probe_layers = tuple(int(x) for x in self.probe_layers)
            if any(x < 0 for x in self.probe_layers):
                raise ValueError(f"probe layers must be >= 0, got {self.probe_layers}")

    def _refuse_folders_inside_the_model(self) -> None:
        """Files written inside a local model's folder would enter its fingerprint: a new revision every run."""
        for flag, folder in (("--output", self.output), ("--embedding-cache", self.embedding_cache)):
            for name in (self.model, *self.peft):
                if folder is None or not os.path.isdir(name):
                    continue
                model = Path(name).resolve()
                if model == folder.resolve() or model in folder.resolve().parents:
                    raise ValueError(f"{flag} {str(folder)!r} lies inside the model folder {name!r}: the files a run "
                                     "writes there would change the model's fingerprint (its revision) on every "
                                     "run. Choose a folder outside it")

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


def _known(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


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


def expected_texts(task_type: str, n_samples: Mapping[Any, int | None]) -> int | None:
    """About how many texts a task encodes, for its progress bar (which grows if it is more)."""
    counts = [n for n in n_samples.values() if n]
    if not counts:
        return None
    return sum(counts) * (2 if task_type in PAIRED_TYPES else 1)


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


@contextlib.contextmanager
def terminal_output() -> Iterator[None]:
    """Log lines printed through tqdm (so they never break a progress bar), third-party deprecation
    warnings users cannot act on silenced by message, and datasets' per-map bars off; all restored after."""
    import datasets

    bars_were_on = datasets.utils.logging.is_progress_bar_enabled()
    with warnings.catch_warnings(), logging_redirect_tqdm():
        for message, category in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        datasets.disable_progress_bars()
        try:
            yield
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()


class Evaluation:
    """One model against a list of tasks, writing into one output folder."""

    def __init__(self, config: EvalConfig, tasks: Sequence[TaskRef] | None = None):
        import mteb

        join_process_group()
        self.config = config
        self.spec = config.model_spec()
        self.tasks = list(tasks) if tasks is not None else resolve_tasks(config.tasks)
        self.store = ResultsStore(config.output)
        self._scratch: tempfile.TemporaryDirectory | None = None
        self.cache = mteb.ResultCache(self._mteb_dir_for_this_rank())
        self.encoder = L2VEncoder(self.spec, batch_size=config.batch_size, show_progress_bar=config.show_progress)
        self.cached = (CachedEncoder(self.encoder, config.embedding_cache, chunk_texts=config.cache_chunk_texts)
                       if config.embedding_cache is not None else None)
        self.identity = {"model": self.spec.model_name, "model_revision": self.spec.revision,
                         "experiment": self.spec.experiment}

    def run(self) -> RunSummary:
        summary = RunSummary(output=self.config.output, embedding_cache=self.config.embedding_cache,
                             rank=world_rank(), **self.identity)
        logger.info("Evaluating %s (revision %s%s) on %d task(s)", self.identity["model"],
                    self.identity["model_revision"],
                    f", {self.identity['experiment']}" if self.identity["experiment"] else "", len(self.tasks))
        try:
            with terminal_output():
                for index, task in enumerate(self.tasks, 1):
                    outcome = self._run_task(task, f"[{index}/{len(self.tasks)}] {task_name(task)}")
                    self._log(outcome)
                    summary.outcomes.append(outcome)
        except KeyboardInterrupt:
            raise EvaluationInterrupted(summary, len(self.tasks)) from None
        finally:
            self.close()
        if self.config.embedding_cache is not None and self.config.embedding_cache.is_dir():
            summary.embedding_cache_bytes = folder_bytes(self.config.embedding_cache)
        if (self.config.output / PREDICTIONS_DIR).is_dir():
            summary.predictions_bytes = folder_bytes(self.config.output / PREDICTIONS_DIR)
        summary.comparison = self._comparison()
        return summary

    def close(self) -> None:
        """Remove this rank's scratch copy of the results (ranks other than 0 work on one)."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _run_task(self, task: TaskRef, label: str) -> TaskOutcome:
        start = time.monotonic()
        try:
            outcome = self._run_probe(task) if isinstance(task, ProbeTask) else self._run_mteb(task, label)
        except (ModelLoadFailed, ResultsTableError):
            raise  # every remaining task would fail the same way
        except MissingDatasetError as err:
            outcome = self._record_failure(task, MISSING_DATA, str(err), start)
        except Exception as err:  # one broken task must not stop the others
            logger.debug("Task %s failed", task_name(task), exc_info=True)
            outcome = self._record_failure(task, ERROR, f"{type(err).__name__}: {err}", start)
        outcome.seconds = time.monotonic() - start
        return outcome

    def _load_model(self) -> float:
        """Load the model now (not inside mteb's timed evaluation); the seconds it took, 0 if loaded."""
        if self.encoder.loaded:
            return 0.0
        start = time.monotonic()
        _ = self.encoder.model
        return time.monotonic() - start

    # ------------------------------------------------------------------ mteb tasks
    def _done(self, name: str) -> Any:
        return self.store.completed(self.identity["model"], self.identity["model_revision"],
                                    self.identity["experiment"], name)

    def _saved_result(self, name: str) -> tuple[Any, bool]:
        """(mteb's JSON result for this task or None, whether an unreadable one was found). A file that
        does not read back is moved aside with a warning naming it: the task is computed again and
        the file is never served."""
        path = self.cache.get_task_result_path(name, self.encoder.mteb_model_meta)
        if not path.is_file():
            return None, False
        try:
            return self.cache.load_task_result(name, self.encoder.mteb_model_meta), False
        except Exception as err:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            path.replace(aside)
            reason = (str(err).splitlines() or [""])[0][:200]
            logger.warning("%s is not a readable mteb result (%s: %s); moved to %s and %s is computed again",
                           path, type(err).__name__, reason, aside.name, name)
            return None, True

    def _run_mteb(self, task, label: str) -> TaskOutcome:
        name = task.metadata.name
        expected = {(split, subset) for split in task.eval_splits for subset in task.hf_subsets}
        existing, unreadable = (None, False) if self.config.overwrite else self._saved_result(name)
        if not self.config.overwrite and not unreadable:
            done = self._done(name)
            if expected <= set(zip(done["split"], done["subset"])):
                score, metric = _main_of(done.to_dict("records"))
                return TaskOutcome(name, SKIPPED, score, metric)
        must_compute = existing is None or bool(existing.get_missing_evaluations(task))
        result, n_samples, load_seconds, progress = self._evaluate(task, must_compute, label)
        if result.exceptions:
            raise RuntimeError("; ".join(str(e.exception) for e in result.exceptions))
        # The rows are built from the JSON mteb wrote (scores rounded as mteb saves them), so the
        # table and mteb's results always agree.
        task_result = self.cache.load_task_result(name, self.encoder.mteb_model_meta) or result.task_results[0]
        if not any(n_samples.values()):
            n_samples = published_samples(task)
        if not any(n_samples.values()) and not must_compute:
            n_samples = self._count_from_data(task)  # rows rebuilt from mteb's JSON: count what was scored
        rows = rows_from_task_result(task_result, task.metadata, n_samples=n_samples, **self.identity)
        rows = with_intervals(rows, predictions_folder(self.cache, name, self.encoder.mteb_model_meta))
        self.store.upsert(rows)
        record_instructions(self.cache.get_task_result_path(name, self.encoder.mteb_model_meta).parent, name,
                            {role: self.encoder.instruction_for(task.metadata, prompt_type) or ""
                             for role, prompt_type in task_roles(task).items()})
        score, metric = _main_of(rows)
        counted = self.cached is not None
        return TaskOutcome(name, OK, score, metric, encoded=progress.encoded if counted else None,
                           reused=progress.reused if counted else None, load_seconds=load_seconds)

    def _evaluate(self, task, must_compute: bool, label: str):
        """mteb.evaluate on this task through the embedding cache, with the task's progress bar;
        (result, samples per split and subset, model load seconds, the task's TaskProgress)."""
        import mteb
        from mteb.abstasks.aggregated_task import AbsTaskAggregate

        preloaded = False
        n_samples: dict = {}
        load_seconds = 0.0
        progress = TaskProgress()
        with dataset_source(self.config.data_dir, task.metadata.name):
            try:
                if must_compute and not isinstance(task, AbsTaskAggregate):
                    # Loading here (not inside mteb.evaluate) keeps data loading and the model's
                    # first load out of the task's evaluation time, and lets us count samples.
                    if not task.data_loaded:
                        task.load_data()
                        preloaded = True
                    n_samples = count_samples(task)
                if must_compute:
                    load_seconds = self._load_model()
                    progress = TaskProgress(label, expected_texts(task.metadata.type, n_samples),
                                            enabled=self.config.show_progress)
                if self.cached is not None:
                    self.cached.progress = progress
                predictions = predictions_folder(self.cache, task.metadata.name, self.encoder.mteb_model_meta)
                if must_compute and task.data_loaded and not isinstance(task, AbsTaskAggregate):
                    save_gold(task, predictions)  # what mteb scores against, beside what it predicts
                result = mteb.evaluate(
                    self.cached or self.encoder, task, cache=self.cache,
                    overwrite_strategy="always" if self.config.overwrite else "only-missing",
                    raise_error=True, co2_tracker=False, show_progress_bar=False, prediction_folder=predictions,
                    encode_kwargs={"batch_size": self.config.batch_size,
                                   "show_progress_bar": self.config.show_progress and self.cached is None},
                )
            finally:
                progress.close()
                if preloaded and task.data_loaded:
                    task.unload_data()
        return result, n_samples, load_seconds, progress

    def _count_from_data(self, task) -> dict:
        """Samples per split and subset, from the task's data (loaded for this, the model is not)."""
        from mteb.abstasks.aggregated_task import AbsTaskAggregate

        if isinstance(task, AbsTaskAggregate):
            return {}
        with dataset_source(self.config.data_dir, task.metadata.name):
            loaded_here = not task.data_loaded
            if loaded_here:
                task.load_data()
            try:
                return count_samples(task)
            finally:
                if loaded_here:
                    task.unload_data()

    # ------------------------------------------------------------------ probes
    def _run_probe(self, task: ProbeTask) -> TaskOutcome:
        name = task.metadata.name
        layers = self.config.probe_layers
        if not self.config.overwrite:
            done = self._done(name)
            have = set(done["layer"].dropna().astype(int))
            if not done.empty and (layers is None or set(layers) <= have):
                return TaskOutcome(name, SKIPPED, *_best_layer(done.to_dict("records")))
        load_seconds = self._load_model()
        rows = task.evaluate(
            encoder=self.encoder.model, model_name=self.identity["model"],
            model_revision=self.identity["model_revision"], data_dir=self.config.probe_data, layers=layers,
            batch_size=self.config.batch_size, cache_dir=self.config.output / "probes", seed=self.config.seed,
            show_progress=self.config.show_progress,
        )
        if not rows:
            raise RuntimeError(f"Probe task {name} returned no results")
        defaults = {"experiment": self.identity["experiment"], "status": OK, "l2v_version": l2v_version(),
                    "created_at": now()}
        rows = [{**defaults, **row, **self.identity} for row in rows]
        self.store.upsert(rows)
        return TaskOutcome(name, OK, *_best_layer(rows), load_seconds=load_seconds)

    # ------------------------------------------------------------------ bookkeeping
    def _record_failure(self, task: TaskRef, status: str, error: str, start: float) -> TaskOutcome:
        seconds = time.monotonic() - start
        self.store.upsert([failure_row(task=task_name(task), task_type=task.metadata.type, status=status,
                                       error=error, eval_seconds=seconds, **self.identity)])
        return TaskOutcome(task_name(task), status, seconds=seconds, error=error)

    def _log(self, o: TaskOutcome) -> None:
        if o.failed:
            logger.error("%s: %s %s: %s", o.task, o.status, o.timing(), o.error)
        else:
            logger.info("%s: %s %s", o.task, o.detail(), o.timing())

    def _comparison(self) -> str:
        """The suite's shipped baselines next to this model, for a run of a suite that ships them."""
        from .leaderboard import comparison_table, shipped_baselines

        suite = suite_name(self.config.tasks)
        baselines = shipped_baselines(suite)
        if baselines is None or world_rank() != 0:
            return ""
        if not self.config.baselines:
            baselines = baselines.iloc[0:0]
        names = [task_name(t) for t in self.tasks if not isinstance(t, ProbeTask)]
        ours = self.store.load()
        mask = ((ours["model"] == self.identity["model"]) & (ours["model_revision"] == self.identity["model_revision"])
                & (ours["experiment"] == self.identity["experiment"]))
        return comparison_table(ours.loc[mask.fillna(False)], baselines, tasks=names, suite=suite)

    def _mteb_dir_for_this_rank(self) -> Path:
        """Under torchrun every rank runs the same tasks (encoding is sharded inside); only rank 0
        writes into the output folder. Other ranks work on a scratch copy of mteb's results, so they
        skip exactly the tasks rank 0 skips and never race its writes; :meth:`close` removes it."""
        mteb_dir = self.config.output / MTEB_DIR
        rank = world_rank()
        if rank == 0:
            return mteb_dir
        self._scratch = tempfile.TemporaryDirectory(prefix=f"l2v-eval-rank{rank}-")
        snapshot = Path(self._scratch.name) / MTEB_DIR
        if mteb_dir.is_dir():
            shutil.copytree(mteb_dir, snapshot)
        return snapshot


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


def world_rank() -> int:
    from l2v_core.distributed import world

    return world()[0]


def join_process_group() -> None:
    """Under torchrun / accelerate launch (``WORLD_SIZE`` > 1), join the process group through
    accelerate's ``PartialState`` (NCCL with one GPU per rank, gloo on CPU or with
    ``ACCELERATE_USE_CPU``), so the ranks share each task's encoding. A plain run stays one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


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
    fetched = []
    for task in resolve_tasks(spec):
        if isinstance(task, ProbeTask) or task.metadata.name in BUNDLED_TASK_NAMES:
            continue
        parts = list(task.metadata.tasks) if isinstance(task, AbsTaskAggregate) else [task]
        for part in parts:
            with dataset_source(data_dir, part.metadata.name, download=True):
                part.load_data()
            part.unload_data()
            fetched.append(part.metadata.name)
            logger.info("Fetched %s", part.metadata.name)
    return fetched
