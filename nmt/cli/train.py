"""``nmt train``: an experiment file in, a run directory out. What the trainer logs (resumed from,
step, new best model) reaches the terminal through the handler of :mod:`nmt.cli.startup`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.cli.output import progress_bar
from nmt.cli.startup import import_tensorflow

if TYPE_CHECKING:
    from nmt.config import Config


def _show(bar: Any) -> Callable[[int, int, dict[str, float]], None]:
    """The trainer's figures on a live bar (on a terminal; elsewhere the trainer logs a line every
    100 steps instead)."""

    def update(step: int, total: int, values: dict[str, float]) -> None:
        bar.total, bar.n = total, step
        shown = {name: f"{value:,.0f}" if name == "tok/s" else f"{value:.4g}" for name, value in values.items()}
        bar.set_postfix(shown, refresh=False)
        bar.refresh()

    return update


def add_parser(subparsers) -> argparse.ArgumentParser:
    train = subparsers.add_parser(
        "train",
        help="train a model from an experiment file (resumes if its run directory has checkpoints)",
        description="Reads the corpus, trains SentencePiece, counts the dev examples that the training data "
        "holds too (logged, and kept in RUN/data_checks.json: nmt data check says more), trains the model, "
        "keeps the best weights on dev "
        "BLEU (a language model: dev loss) and prints the final dev scores. Everything goes into the config's "
        "run_dir; running the same command again resumes from the latest checkpoint.\n\n"
        "Training lasts train.steps, or with --budget (train.time_budget) at most that long: the step rate is "
        "measured as it goes and the learning-rate decay (cosine) is laid over the time left, to reach its floor "
        "when the budget ends; time spent before an interruption counts, so a resumed run finishes the same "
        "budget. A time-budgeted run is not bit-reproducible (where it stops depends on the machine); a "
        "step-budgeted one is. train.average_last averages the last checkpoints at the end (nmt average); "
        "train.init_from starts from another run's weights and tokenizers (fine-tuning).",
        epilog="examples:\n  nmt train --config en-ja.yaml --set train.steps=2000 --set run_dir=runs/short\n"
        "  nmt train --config en-ja.yaml --budget 1h30m --run-dir runs/en-ja-90m\n"
        "  nmt train --config in-domain.yaml --set train.init_from=runs/en-ja   # fine-tune runs/en-ja",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", required=True, help="YAML experiment file, or the name of a shipped one "
                       "(en-ja.yaml, en-ja-tiny.yaml, small-parallel-enja.yaml, lm-en.yaml, "
                       "char-shakespeare.yaml, ptb.yaml)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one config key, e.g. train.steps=200 (repeatable)")
    train.add_argument("--run-dir", help="where to write the run (same as --set run_dir=...)")
    train.add_argument("--budget", metavar="DURATION", help="train for at most this long, e.g. 60m, 90s, 1h30m "
                       "(same as --set train.time_budget=...); with train.steps, whichever ends first")
    train.add_argument("--restart", action="store_true", help="start over in a run directory that holds "
                       "checkpoints: deletes its checkpoints, best and averaged weights, metrics and TensorBoard "
                       "logs (default: resume)")
    train.set_defaults(func=run)
    return train


def run(args: argparse.Namespace) -> int:
    from nmt.config import load_config

    overrides = list(args.set or [])
    if args.budget is not None:  # quoted: validated as the duration string it is, even "60" (no unit)
        overrides.append(f"train.time_budget={json.dumps(args.budget)}")
    config = load_config(args.config, overrides, args.run_dir)  # a typo fails here, before TensorFlow loads
    _check_init_from(config, args.restart)
    import_tensorflow()
    from nmt.training import Trainer

    bar = progress_bar(config.train.steps, "training", unit="step", quiet=getattr(args, "quiet", False))
    try:
        scores = Trainer(config, restart=args.restart, progress=None if bar.disable else _show(bar)).train()
    finally:
        bar.close()
    if scores is not None:
        print(f"dev {scores.summary()}")
    print(f"run directory: {config.run_dir}")
    return 0


def _check_init_from(config: Config, restart: bool) -> None:
    """A train.init_from that names no trained run, or one of another architecture, is said before
    TensorFlow loads; a run that resumes from its own checkpoints does not read it (the source may
    be gone by then), as the trainer does not."""
    from nmt.checkpoints import checkpoint_prefixes
    from nmt.run_dir import RunDir, init_source

    if config.train.init_from is None:
        return
    if restart or not checkpoint_prefixes(RunDir(Path(config.run_dir)).checkpoints):
        init_source(config)
