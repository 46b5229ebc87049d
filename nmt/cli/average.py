"""``nmt average``: the mean of a run's last checkpoints, as weights that ``translate``, ``evaluate``,
``export`` (and so ``serve``) use with ``--weights averaged``, or by default when they score higher
on dev than the best weights (:mod:`nmt.averaging`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.cli.startup import import_tensorflow


def add_parser(subparsers) -> argparse.ArgumentParser:
    average = subparsers.add_parser(
        "average",
        help="average the weights of a run's last N checkpoints (often a better model than any one of them)",
        description="Writes RUN/averaged/model.weights.h5, the element-wise mean of the model weights of the last "
        "N checkpoints in RUN/checkpoints (train.keep_checkpoints sets how many are kept). With a dev set, scores "
        "the averaged and the best weights on dev as training selects the best (greedy BLEU, a language model: "
        "dev loss, on train.eval_max_sentences) and puts the higher into RUN/best/, which translate, evaluate, "
        "export and so serve use by default; --weights averaged picks the averaged weights in any case. The "
        "comparison is added to RUN/metrics.jsonl. Files are written whole or not at all. Refused while the run "
        "is being trained (train.average_last does the same at the end of training).",
        epilog="examples:\n  nmt average --run runs/en-ja --last 3\n"
        "  nmt translate --run runs/en-ja --weights averaged -i in.en -o out.ja",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    average.add_argument("--run", required=True, help="run directory written by `nmt train`")
    average.add_argument("--last", type=int, required=True, metavar="N",
                         help="how many of the newest checkpoints to average (at most those the run keeps)")
    average.set_defaults(func=run)
    return average


def run(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.averaging import average_checkpoints
    from nmt.run_dir import hold_run_dir

    with hold_run_dir(Path(args.run)):  # no trainer may replace best/ meanwhile
        result = average_checkpoints(args.run, args.last)
    print(result.summary())
    return 0
