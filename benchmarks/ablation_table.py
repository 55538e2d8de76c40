"""The recipe ablation's table and plot, from what ``benchmarks/ablation.sh OUT`` left in OUT.

    python benchmarks/ablation_table.py runs/ablation [--reports reports/ablation]

Reads the two l2v-real results folders (``OUT/results-default``: l2v-eval's instructions; ``OUT/results-none``:
none) through l2v's leaderboard (scores and 95% intervals as ``l2v-eval leaderboard`` gives them) and
``OUT/stages.tsv`` (steps and wall seconds of each finished stage), and writes ``ablation.csv`` (one row per chain
and instruction setting), ``ablation.md`` (the README's table) and ``ablation.png`` under the reports folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

from l2v_eval.leaderboard import MEAN_TASK, build_leaderboard, run_dtype, write_leaderboard
from l2v_eval.results import load_results

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

# chain name in the results → (the stages it trained, in order; what the row shows)
CHAINS = {
    "causal": ((), "causal, untrained"),
    "bidirectional": ((), "bidirectional, untrained"),
    "mntp": (("mntp",), "bidirectional + MNTP"),
    "mntp-simcse": (("mntp", "mntp-simcse"), "bidirectional + MNTP + SimCSE"),
    "supervised": (("supervised",), "bidirectional + supervised"),
    "mntp-supervised": (("mntp", "mntp-supervised"), "bidirectional + MNTP + supervised"),
    "mntp-simcse-supervised": (("mntp", "mntp-simcse", "mntp-simcse-supervised"),
                               "bidirectional + MNTP + SimCSE + supervised"),
}
TYPES = ["Retrieval", "PairClassification", "Classification", "Clustering", "Reranking"]
PREFIX = "l2v-ablation/"


def scores(results_dir: Path) -> pd.DataFrame:
    """One row per chain: the five task-type scores and the mean (x100, unrounded), and the mean's interval
    half-width from the leaderboard CSV l2v writes."""
    board = build_leaderboard(load_results(results_dir)).set_index("model")
    csv = pd.read_csv(write_leaderboard(results_dir, results_dir / "leaderboard.csv", baselines=False))
    half = f"{MEAN_TASK} ±"
    table = board[[*TYPES, MEAN_TASK]].rename(columns={MEAN_TASK: "mean"})
    if half in csv:
        table["mean ±"] = csv.set_index("model")[half].reindex(table.index)
    # The experiment (dtype, instructions, causal attention where the run differs from the plain one) says the
    # dtype each row was scored in.
    table["dtype"] = board["experiment"].map(run_dtype)
    table.index = table.index.str.removeprefix(PREFIX)
    return table


def stage_costs(out: Path) -> pd.DataFrame:
    """Steps and wall seconds per stage, the last record of each."""
    path = out / "stages.tsv"
    if not path.is_file():
        return pd.DataFrame(columns=["kind", "steps", "seconds"])
    table = pd.read_csv(path, sep="\t", names=["stage", "kind", "steps", "seconds"])
    return table.drop_duplicates("stage", keep="last").set_index("stage")


def ablation(out: Path) -> pd.DataFrame:
    costs = stage_costs(out)
    rows = []
    for setting in ("default", "none"):
        folder = out / f"results-{setting}"
        if not folder.is_dir():
            continue
        table = scores(folder)
        for chain, (stages, label) in CHAINS.items():
            if chain not in table.index:
                continue
            known = [s for s in stages if s in costs.index]
            complete = len(known) == len(stages)
            rows.append({"chain": label, "instructions": setting, **table.loc[chain].to_dict(),
                         "steps": int(costs.loc[known, "steps"].sum()) if complete else None,
                         "train_minutes": round(costs.loc[known, "seconds"].sum() / 60, 1) if complete else None})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """Rows with l2v-eval's instructions, with the mean without instructions beside them."""
    ours = frame[frame["instructions"] == "default"].set_index("chain")
    none = frame[frame["instructions"] == "none"].set_index("chain")["mean"]
    head = ["chain", *TYPES, "mean", "mean, no instructions", "steps", "training (min)", "dtype"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for chain, row in ours.iterrows():
        mean = f"**{row['mean']:.1f}**" + (f" ± {row['mean ±']:.1f}" if pd.notna(row.get("mean ±")) else "")
        cells = [chain, *(f"{row[t]:.1f}" for t in TYPES), mean,
                 f"{none[chain]:.1f}" if chain in none.index else "",
                 "0" if pd.isna(row["steps"]) and chain.endswith("untrained") else _int(row["steps"]),
                 "" if pd.isna(row["train_minutes"]) else f"{row['train_minutes']:.0f}", row["dtype"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _int(value) -> str:
    return "" if pd.isna(value) else str(int(value))


def plot(frame: pd.DataFrame, path: Path) -> None:
    """One panel per task type and the mean: a bar per chain, with and without instructions."""
    chains = list(dict.fromkeys(frame["chain"]))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), sharey=True)
    for ax, column in zip(axes.flat, [*TYPES, "mean"]):
        for offset, setting, color in ((-0.2, "default", "tab:blue"), (0.2, "none", "tab:orange")):
            part = frame[frame["instructions"] == setting].set_index("chain").reindex(chains)
            errors = part["mean ±"] if column == "mean" and "mean ±" in part else None
            ax.barh([i + offset for i in range(len(chains))], part[column], height=0.4, color=color, xerr=errors,
                    label="l2v-eval's instructions" if setting == "default" else "no instructions")
        ax.set_title(column)
        ax.set_yticks(range(len(chains)), chains)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2)
    fig.suptitle("The LLM2Vec recipe stage by stage: SmolLM2-135M on l2v-real (x100, 512 tokens; the mean with its "
                 "95% interval)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder benchmarks/ablation.sh wrote")
    parser.add_argument("--reports", type=Path, default=Path("reports/ablation"), help="where the table and plot go")
    args = parser.parse_args()
    frame = ablation(args.out)
    if frame.empty:
        raise SystemExit(f"No l2v-real results under {args.out}/results-default or results-none yet")
    args.reports.mkdir(parents=True, exist_ok=True)
    frame.round(2).to_csv(args.reports / "ablation.csv", index=False)
    (args.reports / "ablation.md").write_text(markdown(frame))
    plot(frame, args.reports / "ablation.png")
    print(markdown(frame))
    print(f"Wrote {args.reports}/ablation.csv, ablation.md, ablation.png")


if __name__ == "__main__":
    main()
