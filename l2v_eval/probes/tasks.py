"""The three word-level probe tasks, as task objects with metadata like mteb's.

``PROBE_TASKS["probe-ner"].evaluate(encoder=..., ...)`` (or ``run_probe_task("probe-ner", ...)``)
reads the task's data, gets word vectors for every requested layer (one forward pass,
cached), trains one linear probe per layer on train with early stopping on dev, scores
it on test and returns one tidy row per (layer, metric).

Data: ``data_dir`` None uses the bundled hand-annotated sample (see
``l2v_eval/probes/data``). Otherwise ``data_dir`` holds train/dev/test files
(names: see :mod:`l2v_eval.probes.conll`), or task subdirectories ``chunk/``,
``ner/``, ``pos/`` that take precedence:

- probe-ner: CoNLL-2003 (``token POS chunk NER``);
- probe-chunk: CoNLL-2003 or CoNLL-2000 (``token POS chunk``);
- probe-pos: CoNLL-2003, CoNLL-2000 (Penn Treebank tags) or CoNLL-U (UPOS, or XPOS
  with ``pos_column="xpos"``).

Without a dev file the last 10% of train sentences serve as dev (CoNLL-2000 has
no dev split). Chunk and NER tags in IOB1 (the original CoNLL-2003 files) are
converted to IOB2 first, so token accuracy means the same for every variant.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .conll import SPLITS, Sentence, detect_format, file_sha256, find_split_files, iob1_to_iob2, read_conll
from .features import default_max_length, num_hidden_layers, parse_layers, resolve_model, word_features
from .. import unit_metrics as um
from ..intervals import CI_RESAMPLES, CI_SEED
from ..statistics import bootstrap_interval
from .linear import ProbeConfig, accuracy, extract_spans, span_f1, train_linear_probe

logger = logging.getLogger(__name__)

TASK_TYPE = "WordProbe"
DEV_FRACTION = 0.1


@dataclass(frozen=True)
class ProbeTaskMetadata:
    """What mteb's ``TaskMetadata`` says of a task, for a probe; the harness, ``l2v-eval tasks``,
    the leaderboard and the report read probes and mteb tasks through the same fields."""

    name: str
    description: str
    main_score: str
    metrics: tuple[str, ...]
    type: str = TASK_TYPE
    eval_splits: tuple[str, ...] = ("test",)
    eval_langs: tuple[str, ...] = ("eng-Latn",)


@dataclass(frozen=True)
class ProbeTask:
    """A word-level probe task: its metadata, where its labels are, and how to run it."""

    metadata: ProbeTaskMetadata
    subdir: str
    formats: str
    """Human-readable list of the file formats that carry this task's labels."""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def main_metric(self) -> str:
        return self.metadata.main_score

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metadata.metrics

    @property
    def eval_splits(self) -> list[str]:
        return list(self.metadata.eval_splits)

    def load_data(self, data_dir: str | Path | None = None, pos_column: str = "upos") -> dict[str, SplitData]:
        """Train, dev and test :class:`SplitData`; see the module docstring for the layout."""
        return _load_splits(self, data_dir, pos_column)

    def evaluate(self, *, encoder, model_name: str, model_revision: str | None,
                 data_dir: str | Path | None = None, layers: str | int | Sequence[int] | None = "all",
                 batch_size: int = 16, cache_dir: str | Path | None = None, seed: int = 0,
                 pooling: str = "first", max_length: int | None = None, device: str | None = None,
                 probe_config: ProbeConfig | None = None, pos_column: str = "upos",
                 languages: str = "eng", show_progress: bool = False) -> list[dict]:
        """Probe every requested layer of ``encoder``; one row per (layer, metric).

        ``encoder``: an l2v_core ``LLM2Vec`` (attention as loaded), a SentenceTransformer, or a
        ``(transformers model, tokenizer)`` pair. ``layers``: ``all``, ``last``, ``"0,8,16"`` or ints
        (0 = embeddings). ``pooling``: a word's ``first`` (default), ``last`` or ``mean`` sub-token.
        ``max_length`` defaults to the encoder's. ``device`` None: CUDA when present.
        ``eval_seconds`` of a row: its probe's training and scoring time plus an equal share of the
        feature extraction done by this call (none when the features came from the cache).
        """
        splits = self.load_data(data_dir, pos_column)
        model, tokenizer = resolve_model(encoder)
        wanted = parse_layers(layers, num_hidden_layers(model))
        max_length = max_length or default_max_length(encoder if hasattr(encoder, "max_length") else tokenizer)
        features, extraction_seconds = _features_per_file(
            splits, model, tokenizer, wanted, model_name=model_name, model_revision=model_revision, pooling=pooling,
            batch_size=batch_size, max_length=max_length, cache_dir=cache_dir, device=device,
            show_progress=show_progress)
        labels = _Labels.of(self, splits)
        rows = []
        for layer in wanted:
            start = time.perf_counter()
            scores, best_epoch, predicted = _probe_layer(self, layer, splits, features, labels, probe_config, seed,
                                                         device)
            interval = _interval(self.main_metric, labels.gold["test"], predicted)
            seconds = time.perf_counter() - start + extraction_seconds / len(wanted)
            logger.info("%s layer %d: %s (best epoch %d)", self.name, layer, scores, best_epoch)
            common = {"model": model_name, "model_revision": model_revision, "task": self.name,
                      "task_type": self.metadata.type, "split": "test", "subset": "default", "languages": languages,
                      "n_samples": int(len(labels.y["test"])), "eval_seconds": seconds, "layer": int(layer)}
            rows.extend({**common, "metric": metric, "value": float(value), "is_main_score": metric == self.main_metric,
                         **(interval if metric == self.main_metric else {})} for metric, value in scores.items())
        return rows


PROBE_TASKS: dict[str, ProbeTask] = {task.name: task for task in (
    ProbeTask(ProbeTaskMetadata(
        "probe-chunk", "Syntactic chunks (IOB2 tags; span F1 and token accuracy) from a linear probe on each "
        "layer's frozen word vectors.", "f1", ("f1", "accuracy")),
        "chunk", "CoNLL-2003 (token POS chunk NER) or CoNLL-2000 (token POS chunk)"),
    ProbeTask(ProbeTaskMetadata(
        "probe-ner", "Named entities (CoNLL-2003 PER/LOC/ORG/MISC; span F1) from a linear probe on each layer's "
        "frozen word vectors.", "f1", ("f1",)),
        "ner", "CoNLL-2003 (token POS chunk NER)"),
    ProbeTask(ProbeTaskMetadata(
        "probe-pos", "Part-of-speech tags (token accuracy) from a linear probe on each layer's frozen word "
        "vectors.", "accuracy", ("accuracy",)),
        "pos", "CoNLL-2003, CoNLL-2000 or CoNLL-U (*.conllu)"),
)}
PROBE_TASK_NAMES = tuple(PROBE_TASKS)


def bundled_data_dir() -> Path:
    return Path(__file__).resolve().parent / "data"


def get_task(task_name: str) -> ProbeTask:
    try:
        return PROBE_TASKS[task_name]
    except KeyError:
        raise ValueError(f"Unknown probe task {task_name!r}; expected one of {PROBE_TASK_NAMES}") from None


@dataclass
class SplitData:
    """One split: a slice of the sentences of one file (features are computed per file)."""

    file: Path
    file_sentences: list[Sentence]
    start: int
    stop: int
    column: str

    @property
    def sentences(self) -> list[Sentence]:
        return self.file_sentences[self.start:self.stop]

    @property
    def word_rows(self) -> slice:
        before = sum(len(s.words) for s in self.file_sentences[:self.start])
        return slice(before, before + sum(len(s.words) for s in self.sentences))

    def labels(self) -> list[list[str]]:
        tags = [list(s.tags[self.column]) for s in self.sentences]
        return [iob1_to_iob2(t) for t in tags] if self.column in ("chunk", "ner") else tags


def _column(task: ProbeTask, path: Path, fmt: str, pos_column: str) -> str:
    if task.subdir == "pos":
        if fmt == "conllu":
            if pos_column not in ("upos", "xpos"):
                raise ValueError(f"pos_column must be 'upos' or 'xpos', got {pos_column!r}")
            return pos_column
        return "pos"
    if task.subdir == "chunk" and fmt in ("conll2003", "conll2000"):
        return "chunk"
    if task.subdir == "ner" and fmt == "conll2003":
        return "ner"
    raise ValueError(f"{path} is {fmt} data, which has no {task.subdir} labels; {task.name} needs {task.formats}")


def load_task_data(task_name: str, data_dir: str | Path | None = None,
                   pos_column: str = "upos") -> dict[str, SplitData]:
    """Train, dev and test :class:`SplitData` of a task; see the module docstring for the layout."""
    return get_task(task_name).load_data(data_dir, pos_column)


def _load_splits(task: ProbeTask, data_dir: str | Path | None, pos_column: str) -> dict[str, SplitData]:
    root = bundled_data_dir() if data_dir is None else Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Probe data directory {root} does not exist; put {task.formats} files named train.txt, dev.txt and "
            f"test.txt there (or in {root / task.subdir}), or leave the data directory unset for the bundled sample"
        )
    folder = root / task.subdir if (root / task.subdir).is_dir() else root
    files = find_split_files(folder)
    missing = [split for split in ("train", "test") if split not in files]
    if missing:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{task.name}: no {' and no '.join(missing)} file in {folder} (found: {found}). Put {task.formats} files "
            f"there named train.txt / dev.txt / test.txt (also accepted: eng.train / eng.testa / eng.testb, "
            f"valid.txt, *-train.conllu / *-dev.conllu / *-test.conllu), or in {root / task.subdir}/"
        )
    read: dict[Path, list[Sentence]] = {}
    splits: dict[str, SplitData] = {}
    for split, path in sorted(files.items(), key=lambda item: SPLITS.index(item[0])):
        fmt = detect_format(path)
        column = _column(task, path, fmt, pos_column)
        sentences = read.setdefault(path, read_conll(path, fmt))
        if column == "xpos" and all(t == "_" for s in sentences for t in s.tags["xpos"]):
            raise ValueError(f"{path} has no XPOS tags (column 5 is '_' throughout); use pos_column='upos'")
        splits[split] = SplitData(path, sentences, 0, len(sentences), column)
    if "dev" not in splits:
        train = splits["train"]
        if len(train.file_sentences) < 2:
            raise ValueError(f"{train.file}: need at least 2 sentences to hold some out as dev (no dev file found)")
        n_dev = max(1, round(len(train.file_sentences) * DEV_FRACTION))
        cut = len(train.file_sentences) - n_dev
        logger.warning("%s: no dev file in %s; using the last %d train sentences as dev", task.name, folder, n_dev)
        splits["dev"] = SplitData(train.file, train.file_sentences, cut, len(train.file_sentences), train.column)
        splits["train"] = SplitData(train.file, train.file_sentences, 0, cut, train.column)
    return splits


def _score(metric: str, gold: list[list[str]], predicted: list[list[str]]) -> float:
    if metric == "accuracy":
        return accuracy(np.concatenate(gold), np.concatenate(predicted))
    return span_f1(gold, predicted, scheme="IOB2")["f1"]


def _interval(metric: str, gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float | int]:
    """The 95% bootstrap interval of a probe's test score over its test sentences (the units the probe's
    test set samples): token accuracy pools correct tokens over the drawn sentences, span F1 pools spans
    (2 x correct / (predicted + gold)), so the score on all sentences is :func:`_score`'s."""
    if metric == "accuracy":
        unit_metric = um.ratio([sum(g == p for g, p in zip(gs, ps)) for gs, ps in zip(gold, predicted)],
                               [len(gs) for gs in gold])
    else:
        spans = [(extract_spans(gs, "IOB2"), extract_spans(ps, "IOB2")) for gs, ps in zip(gold, predicted)]
        unit_metric = um.ratio([2 * len(g & p) for g, p in spans], [len(g) + len(p) for g, p in spans])
    interval = bootstrap_interval(unit_metric, len(gold), resamples=CI_RESAMPLES, seed=CI_SEED)
    return {"ci_low": interval.low, "ci_high": interval.high, "ci_resamples": CI_RESAMPLES, "ci_seed": CI_SEED}


def _regroup(flat: Sequence[str], like: list[list[str]]) -> list[list[str]]:
    out, start = [], 0
    for sentence in like:
        out.append(list(flat[start:start + len(sentence)]))
        start += len(sentence)
    return out


def run_probe_task(task_name: str, **kwargs) -> list[dict]:
    """``PROBE_TASKS[task_name].evaluate(**kwargs)``: see :meth:`ProbeTask.evaluate`."""
    return get_task(task_name).evaluate(**kwargs)


def _features_per_file(splits: dict[str, SplitData], model, tokenizer, layers: list[int], *, model_name: str,
                       **kwargs) -> tuple[dict[Path, object], float]:
    """Word features of each data file the splits read (train and dev may share one), and the
    seconds spent computing them (0 for what came from the cache)."""
    features = {}
    seconds = 0.0
    for split in ("train", "dev", "test"):
        path = splits[split].file
        if path not in features:
            sentences = [s.words for s in splits[split].file_sentences]
            features[path] = word_features(model, tokenizer, sentences, layers=layers, data_sha256=file_sha256(path),
                                           model_name=model_name, **kwargs)
            seconds += features[path].seconds
    return features, seconds


@dataclass
class _Labels:
    """Gold tags per split, as strings (for span scores) and as class ids (for the probe)."""

    gold: dict[str, list[list[str]]]
    names: np.ndarray
    y: dict[str, np.ndarray]

    @classmethod
    def of(cls, task: ProbeTask, splits: dict[str, SplitData]) -> _Labels:
        gold = {split: splits[split].labels() for split in ("train", "dev", "test")}
        label_names = sorted({tag for sentence in gold["train"] for tag in sentence})
        if len(label_names) < 2:
            raise ValueError(f"{splits['train'].file}: the train split has only the label {label_names} for {task.name}")
        index = {name: i for i, name in enumerate(label_names)}
        y = {split: np.asarray([index.get(t, -1) for s in gold[split] for t in s]) for split in gold}
        return cls(gold, np.asarray(label_names, dtype=object), y)

    def regrouped(self, predicted: np.ndarray, split: str) -> list[list[str]]:
        return _regroup(self.names[predicted], self.gold[split])


def _probe_layer(task: ProbeTask, layer: int, splits: dict[str, SplitData], features: dict, labels: _Labels,
                 probe_config: ProbeConfig | None, seed: int, device) -> tuple[dict[str, float], int, list]:
    """Train one layer's probe (early stopping on dev's main metric); its test scores, best epoch and test
    predictions (tags per sentence)."""
    by_file = {path: feats.layer(layer) for path, feats in features.items()}
    x = {split: by_file[splits[split].file][splits[split].word_rows] for split in labels.gold}

    def dev_score(predicted: np.ndarray) -> float:
        return _score(task.main_metric, labels.gold["dev"], labels.regrouped(predicted, "dev"))

    probe = train_linear_probe(x["train"], labels.y["train"], x["dev"], labels.y["dev"], len(labels.names),
                               dev_score=dev_score, config=probe_config, seed=seed, device=device)
    predicted = labels.regrouped(probe.predict(x["test"]), "test")
    scores = {metric: _score(metric, labels.gold["test"], predicted) for metric in task.metrics}
    return scores, probe.best_epoch, predicted
