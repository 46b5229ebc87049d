"""``nmt report``: a run's training curves to a PNG and its evaluations as a table (no TensorFlow)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from nmt.run_dir import RunDir

log = logging.getLogger("nmt.cli")

# The columns of the table, in this order, where any evaluation has them. gradient_norm: the mean
# global norm before clipping since the previous evaluation; clipped_fraction: of those steps.
COLUMNS = ("train_loss", "dev_loss", "dev_bleu", "dev_chrf", "dev_word_perplexity", "dev_bits_per_character",
           "gradient_norm", "clipped_fraction")


def add_parser(subparsers) -> argparse.ArgumentParser:
    report = subparsers.add_parser(
        "report",
        help="plot a run's training curves to a PNG (no TensorBoard needed)",
        description="Reads the run's TensorBoard logs (train loss every 20 steps) and metrics.jsonl (each dev "
        "evaluation) and draws the train and dev loss, and dev BLEU and chrF (a language model: dev word "
        "perplexity) against the step. Prints how many dev examples the training data holds too (counted by nmt "
        "train before its first step), then the evaluations as a table (with the gradient norm before "
        "clipping and the fraction of clipped steps since the previous evaluation), then each layer's gradient "
        "norm. The full logs are in RUN/logs: `tensorboard --logdir RUN/logs`.",
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


def layer_table(metrics: list[dict]) -> list[str]:
    """Each layer's gradient norm (before clipping; the mean over the steps between two
    evaluations) at the last evaluation, its largest and where, and its mean over the
    evaluations: which layer's gradients explode, and when. [] for runs that did not record them."""
    recorded = [m for m in metrics if m.get("layer_gradient_norms")]
    if not recorded:
        return []
    layers = list(dict.fromkeys(name for m in recorded for name in m["layer_gradient_norms"]))
    width = max(len("layer gradient norm"), *(len(name) for name in layers))
    rows = [f"{'layer gradient norm':<{width}}  {'last':>11}  {'max':>11}  {'max at step':>11}  {'mean':>11}"]
    for name in layers:
        points = [(m["step"], m["layer_gradient_norms"][name]) for m in recorded if name in m["layer_gradient_norms"]]
        top_step, top = max(points, key=lambda point: point[1])
        mean = sum(value for _, value in points) / len(points)
        rows.append(f"{name:<{width}}  {points[-1][1]:>11.4g}  {top:>11.4g}  {top_step:>11}  {mean:>11.4g}")
    return rows


def run(args: argparse.Namespace) -> int:
    from nmt.visualize import save_curves

    run_dir = Path(args.run)  # present: checked before
    out = Path(args.output) if args.output else RunDir(run_dir).curves
    metrics = RunDir(run_dir).read_metrics()
    save_curves(out, run_dir)
    checks = RunDir(run_dir).read_data_checks()
    if checks and "dev_overlap" in checks:
        from nmt.corpus_checks import Overlap

        print(Overlap(**checks["dev_overlap"]).summary("dev") + "\n")
    print("\n".join(table(metrics)))
    layers = layer_table(metrics)
    if layers:
        print("\n" + "\n".join(layers))
    log.info("wrote %s", out)
    return 0
