"""The ``nmt`` command. Each verb (or family of verbs) is a module with its subparser
(``add_parser``) and what it runs; :mod:`nmt.cli.checks` checks the arguments before TensorFlow is
imported, :mod:`nmt.cli.output` writes the results, :mod:`nmt.cli.startup` sets up the terminal and
imports TensorFlow."""

from __future__ import annotations

import argparse
import sys

from nmt.cli import average, data, export, inspect, lexicon, lm, report, serve, shortlist, train, translate
from nmt.cli.checks import check_arguments
from nmt.cli.startup import import_tensorflow, keep_stderr_line, setup_logging
from nmt.errors import NmtError

__all__ = ["build_parser", "import_tensorflow", "keep_stderr_line", "main"]

EPILOG = """\
examples:
  nmt data check --config en-ja.yaml                  dev/train overlap, duplicates, bad lines
  nmt data split corpus.tsv.gz --dev 2000 --out data/mine   train/dev that share no sentence
  nmt train --config en-ja.yaml                       train (run again to resume)
  nmt train --config en-ja.yaml --budget 60m          the best model an hour buys
  nmt train --config en-ja.yaml --set train.steps=200 --set run_dir=runs/try
  TF_CONFIG='{"cluster": ...}' nmt train --config en-ja.yaml --set train.distribute=multi_worker
  nmt translate --run runs/en-ja -i in.en -o out.ja --beam 5
  cat in.en | nmt translate --run runs/en-ja > out.ja
  nmt evaluate --run runs/en-ja --src dev.en --ref dev.ja
  nmt average --run runs/en-ja --last 3               the mean of the last 3 checkpoints
  nmt shortlist --run runs/en-ja                      then translate/evaluate/export with --shortlist: faster
  nmt train --config lm-en.yaml                       a language model
  nmt next-word --run runs/lm-en "I love eating" -k 5
  nmt suggest --run runs/keyboard-en "I love piz"
  nmt lexicon --run runs/keyboard-en                 suggest only words of the training text
  nmt generate --run runs/char-shakespeare --prompt "ROMEO:" --max-tokens 300 --temperature 0.8 --seed 1
  nmt evaluate --run runs/lm-en --text heldout.txt     perplexity / bits per character
  nmt translate --run runs/en-ja -i one.en --attention map.png   where the decoder looked
  nmt inspect --run runs/lm-en "The cat sat" --plot cat.png      the hidden state, token by token
  nmt report --run runs/en-ja                          training curves to runs/en-ja/curves.png
  nmt export --run runs/en-ja --out serve/models/en-ja  a SavedModel for TensorFlow Serving
  nmt --quiet train --config en-ja.yaml               warnings and errors only
"""

_QUIET_HELP = "show warnings and errors only, not progress (training steps, timings, files written)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt",
        description="Recurrent translation and language models on TensorFlow: data, train, average, translate, "
        "evaluate, shortlist, next-word, suggest, lexicon, generate, inspect, report, export, serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    data.add_parser(verbs)  # data check, data split
    train.add_parser(verbs)
    average.add_parser(verbs)
    shortlist.add_parser(verbs)
    translate.add_parsers(verbs)  # translate, evaluate
    lm.add_parsers(verbs)  # next-word, suggest, generate
    lexicon.add_parser(verbs)
    inspect.add_parser(verbs)
    report.add_parser(verbs)
    export.add_parser(verbs)
    serve.add_parser(verbs)
    for verb in verbs.choices.values():  # also after the verb; SUPPRESS keeps a --quiet given before it
        verb.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The console script owns the terminal: its handler alone shows the library's records, even after
    # a dependency configures the root logger mid-run (sacrebleu's MeCab path does, printing each
    # record twice). Called from Python (argv given), records still reach the caller's handlers.
    setup_logging(quiet=args.quiet, exclusive=argv is None)
    try:
        check_arguments(args)
        return args.func(args)
    except NmtError as error:
        print(f"nmt: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output path in a missing or read-only folder, a full disk
        return _os_error(error)
    except KeyboardInterrupt:
        print("nmt: interrupted", file=sys.stderr)
        return 130


def _os_error(error: OSError) -> int:
    from nmt.io import is_disk_full

    if is_disk_full(error):
        where = f" while writing {error.filename}" if error.filename else ""
        print(f"nmt: error: no space left on device{where}", file=sys.stderr)
    else:
        where = f": {error.filename}" if error.filename else ""
        print(f"nmt: error: {error.strerror or error}{where}", file=sys.stderr)
    return 2
