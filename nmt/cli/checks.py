"""Every check of a command's arguments that needs no model, in one place, done before TensorFlow is
imported (it takes seconds): option values and combinations, the run directory's config and task,
input files present, outputs that are neither directories nor the input itself.

Limits and defaults come from :mod:`nmt.signatures`, the rules the API and the server use too; a
rule's ValueError becomes an :class:`NmtError` naming the option as the user typed it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nmt import signatures
from nmt.cli.output import STDIO
from nmt.errors import NmtError, as_nmt_error

# The task a verb's run must hold (a verb not listed takes either; evaluate: see required_task).
TASKS = {"translate": signatures.TRANSLATION, "shortlist": signatures.TRANSLATION,
         "next-word": signatures.LANGUAGE_MODEL, "suggest": signatures.LANGUAGE_MODEL,
         "lexicon": signatures.LANGUAGE_MODEL,
         "generate": signatures.LANGUAGE_MODEL}

# Per verb: the options that name files read, and those that name files written.
INPUTS = {"translate": ["input"], "evaluate": ["src", "ref", "hyp", "text"], "score": ["src", "tgt", "text"],
          "next-word": ["input"], "suggest": ["input"],
          "generate": ["input"]}
OUTPUTS = {"translate": ["output", "attention"], "score": ["output"], "next-word": ["output"], "suggest": ["output"],
           "generate": ["output"],
           "inspect": ["output", "plot"], "report": ["output"]}

COUNTS = ("beam", "batch_size", "nbest", "num", "last", "min_count")  # options that count something: at least 1
_SHORT = {"input": "-i", "output": "-o", "k": "-k"}


def option(name: str) -> str:
    """The option as the user typed it: -i, -o, -k, --top-p."""
    return _SHORT.get(name, f"--{name.replace('_', '-')}")


def finite_float(text: str) -> float:
    """argparse type for float options: NaN and infinities are refused, naming the option."""
    from nmt.config_fields import check_finite

    try:
        return check_finite("value", float(text))
    except (ValueError, NmtError):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


def naming_option(error: ValueError) -> NmtError:
    """A rule's ValueError ("top_p must be in (0, 1], got 2.0") as the CLI says it ("--top-p must
    be in (0, 1], got 2.0"): the message starts with the setting's name."""
    name, _, rest = str(error).partition(" ")
    return NmtError(f"{option(name)} {rest}")


def check_k(k: int, max_k: int) -> int:
    """-k of next-word: between 1 and ``max_k`` (signatures.MAX_K before the model is loaded, the
    model's own limit after)."""
    try:
        return signatures.check_k(k, max_k)
    except ValueError as error:
        raise naming_option(error) from None


def required_task(args: argparse.Namespace) -> str | None:
    """The kind of run the command needs (None: either)."""
    if args.verb in ("evaluate", "score"):  # --text scores a language model, --src a translation model
        return signatures.LANGUAGE_MODEL if args.text else signatures.TRANSLATION if args.src else None
    return TASKS.get(args.verb)


def check_arguments(args: argparse.Namespace) -> None:
    """All the checks, the cheap ones first; the run before the files (a wrong run is the bigger mistake)."""
    if isinstance(getattr(args, "run", None), list):  # translate/evaluate: --run again makes an ensemble
        from nmt.run_config import check_task
        from nmt.run_dir import RunDir

        args.runs, args.run = args.run, args.run[0]
        for run in args.runs[1:]:
            check_task(run, RunDir(Path(run)).read_config(), signatures.TRANSLATION)
    for name in COUNTS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise NmtError(f"{option(name)} must be at least 1, got {value}")
    if getattr(args, "length_penalty", None) is not None:
        from nmt.config import DecodeConfig
        from nmt.config_fields import check_fields

        try:  # decode.length_penalty's own rule
            check_fields(DecodeConfig(length_penalty=args.length_penalty))
        except NmtError as error:
            raise NmtError(f"--length-penalty{str(error).removeprefix('length_penalty:')}") from None
    verb_check = _VERB_CHECKS.get(args.verb)
    if verb_check is not None:
        verb_check(args)
    if getattr(args, "run", None) and args.verb != "report":
        from nmt.run_config import check_task
        from nmt.run_dir import RunDir

        run = RunDir(Path(args.run))
        check_task(args.run, run.read_config(), required_task(args))
        if getattr(args, "shortlist", None) and not run.shortlist_table.is_file():
            raise NmtError(f"--shortlist: {args.run} has no vocabulary shortlist ({run.shortlist_table}); "
                           f"build it first with nmt shortlist --run {args.run}")
    _check_files(args)


def _check_translate(args: argparse.Namespace) -> None:
    if args.attention and args.attention_dir:
        raise NmtError("give --attention (one sentence) or --attention-dir (one map per line), not both")


def _check_score(args: argparse.Namespace) -> None:
    language_model = args.text and not (args.src or args.tgt)
    translation = not args.text and args.src and args.tgt
    if not (language_model or translation):
        raise NmtError("score needs --src and --tgt (a translation model) or --text (a language model)")
    if args.text and args.length_penalty is not None:
        raise NmtError("--length-penalty is for translation scores (--src/--tgt); a language model's --normalize "
                       "uses its decode.length_penalty")


def _check_evaluate(args: argparse.Namespace) -> None:
    if args.text:
        if not args.run or args.src or args.ref or args.hyp or args.tokenize or args.beam \
                or args.length_penalty is not None:
            raise NmtError("--text (language-model perplexity) needs --run and none of "
                           "--src/--ref/--hyp/--tokenize/--beam/--length-penalty")
    elif not args.ref:
        raise NmtError("evaluate needs --ref (a translation test set) or --text (a language model's held-out text)")
    elif args.hyp and (args.beam or args.length_penalty is not None):
        raise NmtError("--hyp scores a finished translation: --beam and --length-penalty apply when translating --src")
    elif not args.hyp and not (args.run and args.src):
        raise NmtError("evaluate needs --run and --src (to translate), or --hyp (a finished translation)")


def _check_prompt(given: str | None, args: argparse.Namespace) -> None:
    if given is not None and args.input:
        raise NmtError("give a prompt or --input, not both")


def _check_next_word(args: argparse.Namespace) -> None:
    check_k(args.k, signatures.MAX_K)
    _check_prompt(args.text, args)


def _check_generate(args: argparse.Namespace) -> None:
    settings = (args.max_tokens, args.temperature, args.top_k, args.top_p)
    try:
        signatures.check_generation(*settings, seed=args.seed)
    except ValueError as error:
        raise naming_option(error) from None
    last_seed = args.seed + args.num - 1  # --num samples draw with seeds seed, seed+1, ...
    try:
        signatures.check_generation(*settings, seed=last_seed)
    except ValueError as error:
        raise NmtError(f"--seed {args.seed} with --num {args.num}: the last sample's {naming_option(error)}") from None
    _check_prompt(args.prompt, args)


def _check_inspect(args: argparse.Namespace) -> None:
    if args.k is not None and args.k < 1:  # its upper bound is the model's vocabulary: checked by trace
        raise NmtError(f"-k must be at least 1, got {args.k}")


def _check_export(args: argparse.Namespace) -> None:
    tflite = getattr(args, "format", "savedmodel") == "tflite"
    if not tflite:
        with as_nmt_error():
            signatures.check_export_target(args.out, args.version)
    if getattr(args, "quantize", None) and not tflite:
        raise NmtError("--quantize is for --format tflite (a SavedModel keeps float32 weights)")
    if getattr(args, "max_k", None) is not None:
        if not tflite:
            raise NmtError(f"--max-k is for --format tflite (a SavedModel's limit is {signatures.MAX_EXPORTED_K})")
        if not 1 <= args.max_k <= signatures.MAX_EXPORTED_K:
            raise NmtError(f"--max-k must be between 1 and {signatures.MAX_EXPORTED_K}, got {args.max_k}")
    if tflite and args.version is not None:
        raise NmtError("--version is for SavedModel exports; --format tflite writes the files into --out itself")
    if tflite and (len(getattr(args, "runs", None) or [args.run]) > 1 or "," in args.weights):
        raise NmtError("--format tflite exports one language model, not an ensemble of several --run/--weights")
    if tflite and Path(args.out).is_file():
        raise NmtError(f"--out {args.out} is a file; give a folder for the TFLite files")
    if tflite:
        from nmt.run_dir import RunDir

        task = RunDir(Path(args.run)).read_config().task
        with as_nmt_error():
            signatures.check_export_format(task, args.format, args.run)


def _check_report(args: argparse.Namespace) -> None:
    if not Path(args.run).is_dir():
        raise NmtError(f"run directory not found: {args.run}")


_VERB_CHECKS = {"translate": _check_translate, "evaluate": _check_evaluate, "next-word": _check_next_word,
                "generate": _check_generate, "inspect": _check_inspect, "export": _check_export, "score": _check_score,
                "report": _check_report}


def _check_files(args: argparse.Namespace) -> None:
    """Inputs exist; an output is not a directory, nor the input itself (it would be replaced)."""
    inputs = [(name, getattr(args, name)) for name in INPUTS.get(args.verb, [])
              if getattr(args, name) not in STDIO]
    for name, path in inputs:
        if not Path(path).is_file():
            raise NmtError(f"input file not found: {path}" if name == "input"
                           else f"{option(name)} {path}: file not found")
    for name in OUTPUTS.get(args.verb, []):
        path = getattr(args, name)
        if path in STDIO:
            continue
        if Path(path).is_dir():
            raise NmtError(f"{option(name)} {path}: is a directory; give a file name")
        for input_name, input_path in inputs:
            if Path(path).exists() and os.path.samefile(path, input_path):
                raise NmtError(f"{option(name)} {path} is the input file ({option(input_name)} "
                               f"{input_path}): writing there would replace it; choose another output file")
    if args.verb == "evaluate" and args.hyp and args.ref and os.path.samefile(args.hyp, args.ref):
        raise NmtError(f"--hyp {args.hyp} and --ref {args.ref} are the same file: nothing to score")
