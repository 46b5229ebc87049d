"""``nmt export``: a run as a SavedModel for TensorFlow Serving and ``nmt serve``, or a language model as
TensorFlow Lite files for phones (``--format tflite``, :mod:`nmt.tflite`)."""

from __future__ import annotations

import argparse

from nmt import signatures as sig
from nmt.cli.startup import import_tensorflow, weights_option

_TRANSLATION = (f"{sig.TRANSLATE} (= {sig.SERVING_DEFAULT}; beam search with the run's decode.beam_size), "
                f"{sig.TRANSLATE_GREEDY}, {sig.TRANSLATE_IDS}, {sig.TRANSLATE_ATTENTION} (+ the attention map), "
                f"{sig.INSPECT} (encoder states), {sig.SCORE} (log P(target | text) of given pairs)")
_TFLITE = ("next_words.tflite (float32; next_words.float16.tflite and next_words.int8.tflite with --quantize "
           "float16, int8 or all), TensorFlow Lite builtin ops only: prompt ids (and the code points of the word "
           "being typed, for completions) in, the word search's candidate words (piece ids) and their log "
           "probabilities out; tokenizer.model (SentencePiece), nmt-tflite.json (the tensors, the ops the runtime "
           "needs, the pieces, the lexicon) and README.md (how an app turns the outputs into words; "
           "nmt.tflite.TfliteNextWords is the reference). Each file is written under a temporary name and renamed "
           "when whole.")
_LANGUAGE_MODEL = (f"{sig.SERVING_DEFAULT} (the {sig.DEFAULT_K} most likely next words), {sig.NEXT_WORDS} (k per row), "
                   f"{sig.SUGGEST} (a keyboard's: the word being typed completed, else the next words), "
                   f"{sig.GENERATE}, {sig.NEXT_WORDS_IDS}, {sig.INSPECT} (hidden states and next pieces), "
                   f"{sig.GRADIENTS} (how strongly the next-piece guess depends on each piece read)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    export = subparsers.add_parser(
        "export",
        help="write a SavedModel (strings in, strings out) for TensorFlow Serving and `nmt serve`",
        description="Writes OUT/<version>/ (the next free version unless --version is given), a SavedModel "
        "whose signatures take and return strings, with the run's SentencePiece models inside the graph "
        "(tensorflow-text ops, which stock TensorFlow Serving links) and the search loops in core TensorFlow "
        f"ops. Translation: {_TRANSLATION}. Language model: {_LANGUAGE_MODEL}. The version directory appears "
        "complete or not at all.\n\n"
        f"--format tflite (language models only) writes OUT/ for a phone: {_TFLITE}",
        epilog="examples:\n  nmt export --run runs/en-ja --out serve/models/en-ja\n"
        "  nmt export --run runs/lm-en --out serve/models/lm-en --version 3\n"
        "  nmt export --run runs/en-ja --weights ckpt-16000,ckpt-17000,best --out serve/models/en-ja-ensemble\n"
        "  nmt export --run runs/lm-en --format tflite --out phone/lm-en --quantize all\n"
        "  nmt export --run runs/keyboard-en --format tflite --out phone/keyboard --quantize int8 --max-k 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--run", required=True, action="append",
                        help="run directory written by `nmt train`; give it again (--run A --run B), or a comma list "
                        "of --weights, to export an ensemble: one SavedModel holding every member, combined at each "
                        "step of the search (translation, savedmodel only; no inspect signature)")
    export.add_argument("--ensemble-mode", choices=("log_probs", "probs"), default="log_probs",
                        help="how an exported ensemble combines its models at each step: the mean of their "
                        "log-probabilities (default) or of their probabilities")
    export.add_argument("--out", required=True, help="model directory; versions go into numbered subfolders")
    export.add_argument("--version", type=int, help="version number (default: one more than the highest there; "
                        "savedmodel only)")
    export.add_argument("--format", choices=(sig.SAVEDMODEL, sig.TFLITE), default=sig.SAVEDMODEL,
                        help="savedmodel (default): TF Serving / nmt serve; tflite: a language model for phones")
    export.add_argument("--quantize", choices=("float32", "float16", "int8", "all"),
                        help="tflite only: float32 (default), float16 weights, dynamic-range int8 weights, or all "
                        "three files")
    export.add_argument("--max-k", type=int, metavar="K",
                        help=f"tflite only: the most words one call may ask for (default {sig.MAX_EXPORTED_K}); the "
                        "search keeps max(10, K) partial words, so a keyboard's 3 (--max-k 3) runs half the beam")
    export.add_argument("--shortlist", action=argparse.BooleanOptionalAction, default=None,
                        help="translation: decode over the run's vocabulary shortlist (nmt shortlist), whose table "
                        "goes into the SavedModel as a constant, so TF Serving decodes with it unchanged "
                        "(default: the config's decode.shortlist)")
    weights_option(export)
    export.set_defaults(func=run)
    return export


def run(args: argparse.Namespace) -> int:
    import_tensorflow()
    if args.format == sig.TFLITE:
        from nmt.tflite import export_tflite

        path = export_tflite(args.run, args.out, quantize=args.quantize or "float32", weights=args.weights,
                             max_k=args.max_k)
        print(f"exported {args.run} to {path} (TensorFlow Lite)")
        return 0
    from nmt.export import export

    runs = getattr(args, "runs", None) or [args.run]
    path = export(runs, args.out, version=args.version, weights=args.weights, shortlist=args.shortlist,
                  ensemble_mode=args.ensemble_mode)
    print(f"exported {' + '.join(runs)}{'' if args.weights == 'best' else f' ({args.weights})'} to {path}")
    return 0
