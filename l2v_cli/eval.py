"""``l2v-eval``: argument parsing only; the work happens in the library modules.

    l2v-eval --model PATH --tasks SPEC [options]        (same as ``l2v-eval run ...``)
    l2v-eval leaderboard RESULTS_DIR [-o leaderboard.csv] [--tasks SPEC]
    l2v-eval report RESULTS_DIR -o reports/NAME
    l2v-eval compare RESULTS_DIR --models A B [--tasks T ...] [--resamples 1000] [--seed 0] [-o FILE]
    l2v-eval tasks SPEC                                 (list what a spec expands to)
    l2v-eval models                                     (model names --model knows: bundled, mteb's LLM2Vec entries)
    l2v-eval download --tasks SPEC --data-dir DIR       (needs internet)
    l2v-eval cache info|clear [DIR]                     (embedding caches under DIR, default results/)
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

COMMANDS = ("run", "leaderboard", "report", "compare", "tasks", "models", "download", "cache")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of the typed ``config_class`` that has help text: ``--field-name`` (or the field's
    ``flag``), its default, help, metavar and choices read from the field; booleans are switches, tuples
    repeat. Values are checked once, by the config."""
    hints = typing.get_type_hints(config_class)
    for declared in dataclasses.fields(config_class):
        meta = declared.metadata
        if not meta.get("help"):
            continue  # not a command-line setting
        flag = meta.get("flag", "--" + declared.name.replace("_", "-"))
        kwargs = {"dest": declared.name, "default": declared.default, "help": meta["help"].replace("%", "%%")}
        hint = hints[declared.name]
        members = typing.get_args(hint) or (hint,)
        if hint is bool:
            kwargs["action"] = "store_false" if declared.default else "store_true"
        elif typing.get_origin(hint) is tuple:
            kwargs.update(action="append", default=list(declared.default))
        else:
            kwargs["type"] = int if int in members else str
        for key in ("metavar", "choices"):
            if key in meta:
                kwargs[key] = meta[key]
        parser.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, config_class: type):
    """The typed config from parsed flags (those :func:`add_config_flags` added)."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if hasattr(args, f.name)})


def build_parser() -> argparse.ArgumentParser:
    from l2v_eval.harness import EvalConfig

    parser = argparse.ArgumentParser(
        prog="l2v-eval",
        description="Evaluate text encoders on MTEB tasks (via mteb), the bundled l2v-real and l2v-mini suites and word-level "
                    "probes; build leaderboards and reports from the results. `l2v-eval --model M --tasks T` runs "
                    "the evaluation; see `l2v-eval run --help` for its options.",
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="evaluate a model (the default command)")
    add_config_flags(run, EvalConfig)

    board = sub.add_parser("leaderboard", help="one row per model: task-type means and MTEB-style averages")
    board.add_argument("results_dir", help="a suite's results folder (results/l2v-real) or a folder of them (results)")
    board.add_argument("-o", "--output", default=None, help="CSV path (default: RESULTS_DIR/leaderboard.csv)")
    board.add_argument("--tasks", default=None, help="the task set to rank on (default: every task in the results)")
    board.add_argument("--raw", action="store_true", help="keep scores in 0-1 instead of x100")
    board.add_argument("--no-baselines", action="store_true", help="leave out the baselines a suite ships with l2v")
    board.add_argument("--model-meta", action="store_true",
                       help="also print each model's parameters, embedding size, token limit and weight memory "
                            "(from its model_meta.json; the CSV always has them)")

    report = sub.add_parser("report", help="Markdown + HTML report with plots")
    report.add_argument("results_dir", help="a suite's results folder (results/l2v-real) or a folder of them (results)")
    report.add_argument("-o", "--output", required=True, help="report folder, e.g. reports/NAME")
    report.add_argument("--title", default=None, help="the report's title (default: 'l2v evaluation report: <report folder name>')")
    report.add_argument("--no-baselines", action="store_true", help="leave out the baselines a suite ships with l2v")

    compare = sub.add_parser("compare", help="is model B better than model A? per task and on the mean, with "
                                             "paired-bootstrap intervals and Holm-adjusted p-values")
    compare.add_argument("results_dir", help="a suite's results folder, e.g. results/l2v-real")
    compare.add_argument("--models", nargs=2, required=True, metavar=("A", "B"),
                         help="two models as the results table names them (a causal run: 'NAME [attention_causal]')")
    compare.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                         help="tasks to compare (names, or comma-separated; default: every task both finished)")
    compare.add_argument("--resamples", type=_positive, default=1000, help="bootstrap resamples (default: 1000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    compare.add_argument("-o", "--output", default=None, help="also write the table as CSV here")

    tasks = sub.add_parser("tasks", help="list the tasks a --tasks spec expands to")
    tasks.add_argument("spec", help="what --tasks takes: a preset (l2v-real, l2v-mini, mteb-en, mteb-en-v2, "
                                     "mteb-en-quick, probes), a task type (sts, retrieval, ...) or comma-separated "
                                     "task names")

    sub.add_parser("models", help="list the model names --model knows (bundled models, mteb's LLM2Vec entries)")

    download = sub.add_parser("download", help="fetch task data into a --data-dir folder (needs internet)")
    download.add_argument("--tasks", required=True, help="what `l2v-eval --tasks` takes; bundled tasks need nothing")
    download.add_argument("--data-dir", required=True, help="folder to fetch into; give it to `l2v-eval --data-dir`")

    cache = sub.add_parser("cache", help="list or delete embedding caches")
    cache.add_argument("action", choices=("info", "clear"), help="info: list the caches and their sizes; clear: delete them")
    cache.add_argument("dir", nargs="?", default="results",
                       help="an embedding cache, or a results folder whose (suite folders') embedding-cache "
                            "folders are meant (default: results)")
    return parser


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("l2v_eval").setLevel(logging.INFO)
    logging.getLogger("l2v_core").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `l2v-eval --model ... --tasks ...` is the run command
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging()
    from l2v_core.errors import ModelLoadError

    from l2v_eval.model import ModelLoadFailed
    from l2v_eval.tasks.local import MissingDatasetError

    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError, ModelLoadFailed, ModelLoadError, MissingDatasetError) as err:
        print(f"l2v-eval: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: what finished and how to go on, not a traceback
        print(f"l2v-eval: {err.message() if hasattr(err, 'message') else 'interrupted'}", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "run":
        from l2v_eval.harness import EvalConfig, run_evaluation

        config = config_from_args(args, EvalConfig)
        summary = run_evaluation(config)
        print(summary.format())
        return summary.exit_code
    if args.command == "leaderboard":
        from l2v_eval.leaderboard import expected_tasks, leaderboard_summary

        print(leaderboard_summary(args.results_dir, args.output, tasks=expected_tasks(args.tasks) if args.tasks else None,
                                  scale=1.0 if args.raw else 100.0, baselines=not args.no_baselines,
                                  model_meta=args.model_meta))
        return 0
    if args.command == "report":
        from l2v_eval.report import write_report

        md = write_report(args.results_dir, args.output, title=args.title, baselines=not args.no_baselines)
        print(f"Wrote {md}\nWrote {md.with_name('report.html')}")
        return 0
    if args.command == "compare":
        from l2v_eval.comparison import compare, format_comparison

        tasks = [t.strip() for item in args.tasks for t in item.split(",") if t.strip()] if args.tasks else None
        table = compare(args.results_dir, *args.models, tasks=tasks, resamples=args.resamples, seed=args.seed)
        print(format_comparison(table))
        if args.output:
            table.to_csv(args.output, index=False)
            print(f"Wrote {args.output}")
        return 0
    if args.command == "tasks":
        from l2v_eval.tasks.presets import resolve_tasks

        print("task\ttype\tsplits")
        for task in resolve_tasks(args.spec):
            print(f"{task.metadata.name}\t{task.metadata.type}\t{','.join(task.eval_splits)}")
        return 0
    if args.command == "cache":
        from l2v_eval import cache_folder

        print(cache_folder.clear_caches(args.dir) if args.action == "clear" else cache_folder.info(args.dir))
        return 0
    if args.command == "models":
        from l2v_eval.registry import named_models

        print("name\trevision\twhat it loads")
        for row in named_models():
            print("\t".join(row))
        return 0
    if args.command == "download":
        from l2v_eval.harness import download_task_data

        fetched = download_task_data(args.tasks, args.data_dir)
        print(f"Fetched {len(fetched)} task(s) into {args.data_dir}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
