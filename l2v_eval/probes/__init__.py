"""Word-level probes: POS tagging, chunking and NER from frozen per-layer word vectors.

As in the LLM2Vec paper's word-level evaluation, a linear classifier is trained on
frozen token representations (CoNLL-2003 style data) to compare causal,
bidirectional, MNTP and SimCSE versions of a model, layer by layer. Each probe is a
task object (:class:`ProbeTask`, in ``PROBE_TASKS``) with metadata like mteb's tasks.
"""
from .conll import (ConllFormatError, Sentence, detect_format, find_split_files, iob1_to_iob2, read_conll,
                    read_conll2000, read_conll2003, read_conllu)
from .features import extract_word_features, parse_layers, plan_pieces, word_features
from .linear import LinearProbe, ProbeConfig, accuracy, extract_spans, span_f1, train_linear_probe
from .tasks import (PROBE_TASK_NAMES, PROBE_TASKS, TASK_TYPE, ProbeTask, ProbeTaskMetadata, bundled_data_dir,
                    get_task, load_task_data, run_probe_task)

__all__ = [
    "PROBE_TASKS", "PROBE_TASK_NAMES", "TASK_TYPE", "ConllFormatError", "LinearProbe", "ProbeConfig", "ProbeTask",
    "ProbeTaskMetadata", "Sentence", "accuracy", "bundled_data_dir", "detect_format", "extract_spans",
    "extract_word_features", "find_split_files", "get_task", "iob1_to_iob2", "load_task_data", "parse_layers",
    "plan_pieces", "read_conll", "read_conll2000", "read_conll2003", "read_conllu", "run_probe_task", "span_f1",
    "train_linear_probe", "word_features",
]
