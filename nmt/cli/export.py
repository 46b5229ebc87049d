"""``nmt export``: a run as a SavedModel for TensorFlow Serving and ``nmt serve``."""

from __future__ import annotations

import argparse

from nmt import signatures as sig
from nmt.cli.startup import import_tensorflow, weights_option

_TRANSLATION = (f"{sig.TRANSLATE} (= {sig.SERVING_DEFAULT}; beam search with the run's decode.beam_size), "
                f"{sig.TRANSLATE_GREEDY}, {sig.TRANSLATE_IDS}, {sig.TRANSLATE_ATTENTION} (+ the attention map), "
                f"{sig.INSPECT} (encoder states)")
_LANGUAGE_MODEL = (f"{sig.SERVING_DEFAULT} (the {sig.DEFAULT_K} most likely next words), {sig.NEXT_WORDS} (k per row), "
                   f"{sig.GENERATE}, {sig.NEXT_WORDS_IDS}, {sig.INSPECT} (hidden states and next pieces)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    export = subparsers.add_parser(
        "export",
        help="write a SavedModel (strings in, strings out) for TensorFlow Serving and `nmt serve`",
        description="Writes OUT/<version>/ (the next free version unless --version is given), a SavedModel "
        "whose signatures take and return strings, with the run's SentencePiece models inside the graph "
        "(tensorflow-text ops, which stock TensorFlow Serving links) and the search loops in core TensorFlow "
        f"ops. Translation: {_TRANSLATION}. Language model: {_LANGUAGE_MODEL}. The version directory appears "
        "complete or not at all.",
        epilog="examples:\n  nmt export --run runs/en-ja --out serve/models/en-ja\n"
        "  nmt export --run runs/lm-en --out serve/models/lm-en --version 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--run", required=True, help="run directory written by `nmt train`")
    export.add_argument("--out", required=True, help="model directory; versions go into numbered subfolders")
    export.add_argument("--version", type=int, help="version number (default: one more than the highest there)")
    weights_option(export)
    export.set_defaults(func=run)
    return export


def run(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.export import export

    path = export(args.run, args.out, version=args.version, weights=args.weights)
    print(f"exported {args.run} to {path}")
    return 0
