"""``nmt report``: a run's training curves to a PNG and its evaluations as a table (no TensorFlow)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nmt.run_dir import RunDir

log = logging.getLogger("nmt.cli")

# The columns of the table, in this order, where any evaluation has them.
COLUMNS = ("train_loss", "dev_loss", "dev_bleu", "dev_chrf", "dev_word_perplexity", "dev_bits_per_character")


def add_parser(subparsers) -> argparse.ArgumentParser:
    report = subparsers.add_parser(
        "report",
        help="plot a run's training curves to a PNG (no TensorBoard needed)",
        description="Reads the run's TensorBoard logs (train loss every 20 steps) and metrics.jsonl (each dev "
        "evaluation) and draws the train and dev loss, and dev BLEU and chrF (a language model: dev word "
        "perplexity) against the step. Prints the evaluations as a table. The full logs are in RUN/logs: "
        "`tensorboard --logdir RUN/logs`.",
        epilog="example: nmt report --run runs/en-ja            # writes runs/en-ja/curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("--run", required=True, help="run directory written by `nmt train`")
    report.add_argument("-o", "--output", metavar="PNG", help="where to write the plot (default: RUN/curves.png)")
    report.set_defaults(func=run)
    return report


def table(metrics: list[dict]) -> list[str]:
    keys = [k for k in COLUMNS if any(k in m for m in metrics)]
    rows = [f"{'step':>8}  " + "  ".join(f"{k:>21}" for k in keys)]
    for m in metrics:
        rows.append(f"{m['step']:>8}  " + "  ".join(f"{m[k]:>21.4f}" if k in m else f"{'':>21}" for k in keys))
    return rows


def run(args: argparse.Namespace) -> int:
    from nmt.visualize import read_metrics, save_curves

    run_dir = Path(args.run)  # present: checked before
    out = Path(args.output) if args.output else RunDir(run_dir).curves
    metrics = read_metrics(run_dir)
    save_curves(out, run_dir)
    print("\n".join(table(metrics)))
    log.info("wrote %s", out)
    return 0
