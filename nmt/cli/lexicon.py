"""``nmt lexicon``: the words a language model's ``suggest`` may offer (:mod:`nmt.lexicon`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nmt.cli.startup import import_tensorflow


def add_parser(subparsers) -> argparse.ArgumentParser:
    lexicon = subparsers.add_parser(
        "lexicon",
        help="write a language model's lexicon: the words suggest may offer, as a phone keyboard's dictionary",
        description="Writes RUN/lexicon.txt ('word<TAB>count', most frequent first): the words of the run's "
        "training text (data.train), cut as suggest cuts the word being typed, seen at least --min-count times, "
        "and, for a run fine-tuned from another (train.init_from), every word of that run's lexicon. From then on "
        "suggest (nmt suggest, nmt.load(...).suggest, /v1/suggest, and the suggest signature and TFLite file of "
        "a later nmt export) offers only these words: a subword model held to a typed prefix can otherwise "
        "spell words nobody writes. next-word is unchanged. Delete the file to suggest without it. The file is "
        "written whole or not at all.",
        epilog="examples:\n  nmt lexicon --run runs/keyboard-en\n  nmt lexicon --run runs/keyboard-en --min-count 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lexicon.add_argument("--run", required=True, help="run directory of a language model (task: lm)")
    lexicon.add_argument("--min-count", type=int, default=1, metavar="N",
                         help="keep the words seen at least N times in the training text (default 1: all)")
    lexicon.set_defaults(func=run)
    return lexicon


def run(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.run_dir import RunDir
    from nmt.tasks import task_for

    run_dir = RunDir(Path(args.run))
    words = task_for(run_dir.read_config()).build_lexicon(run_dir, args.min_count)
    print(f"wrote {run_dir.lexicon}: {len(words):,} words")
    return 0
