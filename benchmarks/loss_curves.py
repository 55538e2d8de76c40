"""Two training runs' loss curves side by side: do they track each other (e.g. fp32 against bf16 autocast)?

    python benchmarks/loss_curves.py RUN_A RUN_B [--labels fp32,bf16] [--steps 50] [--out reports/precision]

Reads each run's ``metrics.csv`` (what ``l2v-train`` writes: one row per step), keeps the first ``--steps`` steps
both runs logged, and writes ``loss_curves.csv`` (step, each run's loss and seconds) and ``loss_curves.png`` under
``--out``. The runs should share their data order and seeds (the same config but for the setting compared), so that
step k is the same batch in both. The LAST line printed is one JSON object: steps, each run's final-step loss and
mean loss over the last 10 steps, the final step's relative difference, and each run's median seconds per step
(the first step, which pays for warm-up, left out). Figures, not a test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)


def paired_steps(runs: list[Path], labels: list[str], steps: int) -> pd.DataFrame:
    frames = []
    for run, label in zip(runs, labels):
        metrics = pd.read_csv(run / "metrics.csv").dropna(subset=["loss"])
        frames.append(metrics[["step", "loss", "seconds"]].rename(
            columns={"loss": f"loss_{label}", "seconds": f"seconds_{label}"}).set_index("step"))
    both = frames[0].join(frames[1], how="inner").sort_index()
    return both[both.index <= steps]


def summary(table: pd.DataFrame, labels: list[str]) -> dict:
    first, second = (table[f"loss_{label}"] for label in labels)
    out = {"steps": int(table.index.max())}
    for label in labels:
        out[f"{label}_final_loss"] = round(float(table[f"loss_{label}"].iloc[-1]), 5)
        out[f"{label}_last10_mean_loss"] = round(float(table[f"loss_{label}"].iloc[-10:].mean()), 5)
        out[f"{label}_step_s"] = round(float(table[f"seconds_{label}"].iloc[1:].median()), 3)
    out["final_relative_difference"] = round(float(abs(second.iloc[-1] - first.iloc[-1]) / abs(first.iloc[-1])), 4)
    return out


def plot(table: pd.DataFrame, labels: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label in labels:
        ax.plot(table.index, table[f"loss_{label}"], marker=".", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (the step's batch)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Training loss per step, same batches in both runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs=2, help="two l2v-train output folders (each with metrics.csv)")
    p.add_argument("--labels", default="a,b", help="comma pair naming the runs (default a,b)")
    p.add_argument("--steps", type=int, default=50, help="the first N steps (default 50)")
    p.add_argument("--out", type=Path, default=Path("reports/precision"))
    args = p.parse_args(argv)
    labels = args.labels.split(",")
    if len(labels) != 2 or len(set(labels)) != 2:
        p.error("--labels takes two different names, comma-separated")
    table = paired_steps(args.runs, labels, args.steps)
    if len(table) < 2:
        p.error("the two runs share fewer than two logged steps")
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "loss_curves.csv")
    plot(table, labels, args.out / "loss_curves.png")
    print(f"Wrote {args.out}/loss_curves.csv and loss_curves.png")
    print(json.dumps(summary(table, labels)))


if __name__ == "__main__":
    main()
