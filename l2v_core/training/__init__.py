"""Training: MNTP on transformers' Trainer, unsupervised SimCSE and supervised contrastive on
sentence-transformers' trainer, as in the LLM2Vec paper.

>>> from l2v_core.training import load_config, train
>>> result = train("mntp", load_config("mntp", "mntp.json", {"max_steps": 100}))
>>> write_training_report(result.output_dir)   # report.png + report.md: loss and scores against step

``train`` takes an optional ``evaluator`` (a sentence-transformers ``SentenceEvaluator``, called with a
``SentenceTransformer`` of the encoder being trained every ``eval_steps``) and trainer ``callbacks``.
"""
from __future__ import annotations

from .arguments import build_config, load_config
from .config import STAGES, ConfigError, ContrastiveConfig, MNTPConfig, SimCSEConfig, SupervisedConfig, TrainConfig
from .data import DataError, load_texts, load_triples, sample_path
from .report import write_training_report
from .run import CheckpointError, TrainResult


def train(stage: str, config: TrainConfig, evaluator=None, callbacks=(), prompts=None) -> TrainResult:
    """Run training ``stage`` ("mntp", "simcse" or "supervised") with a config of that stage. ``prompts``
    (name -> instruction, or a function giving them, called when saving): sentence-transformers prompts saved
    with the adapter and the merged encoder, e.g. the instructions evaluation gives each task; the training
    instruction becomes ``query``."""
    if stage == "mntp":
        from .mntp import train_mntp

        return train_mntp(config, evaluator, callbacks, prompts)
    if stage == "simcse":
        from .contrastive import train_simcse

        return train_simcse(config, evaluator, callbacks, prompts)
    if stage == "supervised":
        from .contrastive import train_supervised

        return train_supervised(config, evaluator, callbacks, prompts)
    raise ConfigError(f"Unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")


__all__ = ["train", "load_config", "build_config", "TrainConfig", "MNTPConfig", "ContrastiveConfig", "SimCSEConfig",
           "SupervisedConfig", "STAGES", "ConfigError", "CheckpointError", "DataError", "TrainResult",
           "write_training_report", "load_texts", "load_triples", "sample_path"]
