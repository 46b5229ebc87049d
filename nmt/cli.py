"""The ``nmt`` command: each verb is a few lines over :mod:`nmt.training` and :mod:`nmt.inference`."""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nmt.errors import NmtError  # noqa: E402
from nmt.serve_options import add_serve_arguments  # noqa: E402

EPILOG = """\
examples:
  nmt train --config en-ja.yaml                       train (run again to resume)
  nmt train --config en-ja.yaml --set train.steps=200 --set run_dir=runs/try
  TF_CONFIG='{"cluster": ...}' nmt train --config en-ja.yaml --set train.distribute=multi_worker
  nmt translate --run runs/en-ja -i in.en -o out.ja --beam 5
  cat in.en | nmt translate --run runs/en-ja > out.ja
  nmt evaluate --run runs/en-ja --src dev.en --ref dev.ja
  nmt train --config lm-en.yaml                       a language model
  nmt next-word --run runs/lm-en "I love eating" -k 5
  nmt generate --run runs/char-shakespeare --prompt "ROMEO:" --max-tokens 300 --temperature 0.8 --seed 1
  nmt evaluate --run runs/lm-en --text heldout.txt     perplexity / bits per character
  nmt translate --run runs/en-ja -i one.en --attention map.png   where the decoder looked
  nmt inspect --run runs/lm-en "The cat sat" --plot cat.png      the hidden state, token by token
  nmt report --run runs/en-ja                          training curves to runs/en-ja/curves.png
  nmt export --run runs/en-ja --out serve/models/en-ja  a SavedModel for TensorFlow Serving
"""


# What TensorFlow prints at start-up on a machine without an NVIDIA driver: true, and no use to anyone.
_NO_GPU_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit: "
)


def _nvidia_driver_present() -> bool:
    """Cheap signs of an NVIDIA driver: its device nodes (WSL: /dev/dxg) or libcuda on the loader path."""
    if glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg") or os.path.exists("/proc/driver/nvidia"):
        return True
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None


def keep_stderr_line(line: str) -> bool:
    """False for TensorFlow's complaints about a missing CUDA driver, True for anything else."""
    return not _NO_GPU_NOISE.search(line)


def import_tensorflow() -> None:
    """Imports TensorFlow and finds its devices, once the arguments are checked (it takes seconds).
    Without an NVIDIA driver, what it writes to stderr meanwhile is held back and replayed without the
    lines that say there is no GPU; with one, nothing is filtered (those lines then mean trouble)."""
    if "tensorflow" in sys.modules or _nvidia_driver_present():
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)  # C++ logging writes to the descriptor, not to sys.stderr
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # cuInit runs, and complains, here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if keep_stderr_line(line)))
            sys.stderr.flush()


def finite_float(text: str) -> float:
    """argparse type for float options: NaN and infinities are refused, naming the option."""
    from nmt.config import check_finite

    try:
        return check_finite("value", float(text))
    except (ValueError, NmtError):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


# Per verb: the options that name files read, and those that name files written.
_INPUTS = {"translate": ["input"], "evaluate": ["src", "ref", "hyp", "text"], "next-word": ["input"],
           "generate": ["input"]}
_OUTPUTS = {"translate": ["output", "attention"], "next-word": ["output"], "generate": ["output"],
            "inspect": ["output", "plot"], "report": ["output"]}


def _option(name: str) -> str:
    """The option as the user typed it: -i, -o, -k, --top-p."""
    short = {"input": "-i", "output": "-o", "k": "-k"}
    return short.get(name, f"--{name.replace('_', '-')}")


def _task(args: argparse.Namespace) -> str | None:
    """The kind of run a verb needs (None: either)."""
    if args.verb == "evaluate":
        return "lm" if args.text else "translation" if args.src else None
    return {"translate": "translation", "next-word": "lm", "generate": "lm"}.get(args.verb)


def check_arguments(args: argparse.Namespace) -> None:
    """What can be checked without a model, before TensorFlow is imported: option values, the run
    directory's config, input files present, outputs that are not directories nor the input itself."""
    for name in ("beam", "batch_size", "nbest", "num", "max_tokens", "k"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise NmtError(f"{_option(name)} must be at least 1, got {value}")
    if args.verb == "generate":
        from nmt.config import check_sampling

        if args.top_k < 0:
            raise NmtError(f"--top-k must be 0 (off) or more, got {args.top_k}")
        try:
            check_sampling(args.temperature, args.top_p, args.max_tokens, args.seed)
        except NmtError as error:
            raise NmtError(f"--{str(error).replace('_', '-')}") from None
    if getattr(args, "run", None) and args.verb != "report":  # the run first: a wrong run is the bigger mistake
        from nmt.config import check_task, read_run_config

        check_task(args.run, read_run_config(Path(args.run)), _task(args))
    inputs = [(name, getattr(args, name)) for name in _INPUTS.get(args.verb, [])
              if getattr(args, name) not in (None, "-")]
    for name, path in inputs:
        if not Path(path).is_file():
            raise NmtError(f"input file not found: {path}" if name == "input"
                           else f"{_option(name)} {path}: file not found")
    for name in _OUTPUTS.get(args.verb, []):
        path = getattr(args, name)
        if path in (None, "-"):
            continue
        if Path(path).is_dir():
            raise NmtError(f"{_option(name)} {path}: is a directory; give a file name")
        for input_name, input_path in inputs:
            if Path(path).exists() and os.path.samefile(path, input_path):
                raise NmtError(f"{_option(name)} {path} is the input file ({_option(input_name)} "
                               f"{input_path}): writing there would replace it; choose another output file")
    if args.verb == "evaluate" and args.hyp and args.ref and os.path.samefile(args.hyp, args.ref):
        raise NmtError(f"--hyp {args.hyp} and --ref {args.ref} are the same file: nothing to score")


def _read_input_lines(path: str | None) -> list[str]:
    """Lines of a file or stdin; a line is what lies between newlines (no other separators)."""
    from nmt.data import decode_lines, read_lines

    if path in (None, "-"):
        return [line for _, line in decode_lines(sys.stdin.buffer, "<stdin>")]
    if not Path(path).is_file():
        raise NmtError(f"input file not found: {path}")
    return [line for _, line in read_lines(path)]


def _progress_bar(total: int, label: str):
    """A tqdm bar on stderr, hidden when stderr is not a terminal."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="sent", desc=label, file=sys.stderr, disable=not sys.stderr.isatty())
    return bar


def cmd_train(args: argparse.Namespace) -> int:
    from nmt.config import load_config

    config = load_config(args.config, args.set or [])  # a typo fails here, before TensorFlow loads
    if args.run_dir:
        config.run_dir = args.run_dir  # a path, taken as typed (not parsed as YAML like --set)
    import_tensorflow()
    from nmt.training import Trainer

    scores = Trainer(config, restart=args.restart).train()
    if scores is not None:
        print(f"dev {scores.summary()}")
    print(f"run directory: {config.run_dir}")
    return 0


def _load_translator(args: argparse.Namespace):
    import_tensorflow()
    from nmt.inference import load

    return load(args.run, weights=args.weights, task="translation")


def _load_language_model(args: argparse.Namespace):
    import_tensorflow()
    from nmt.inference import load

    return load(args.run, weights=args.weights, task="lm")


def _write_output(path: str | None, text: str) -> None:
    from nmt.io import atomic_writer

    if path in (None, "-"):
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as error:
            raise OSError(error.errno, error.strerror, "<stdout>") from None
    else:
        with atomic_writer(path) as handle:
            handle.write(text)


def _translate_lines(translator, args: argparse.Namespace, lines: list[str], with_attention: bool = False):
    translator.prepare(args.beam)  # traced before the clock starts: the time below is translation alone
    bar = _progress_bar(len(lines), "translating")
    start = time.perf_counter()
    try:
        results = translator.translate(
            lines, beam_size=args.beam, nbest=getattr(args, "nbest", 1), batch_size=args.batch_size,
            with_attention=with_attention, progress=bar.update,
        )
    finally:
        bar.close()
    # Model loading and tracing excluded (as OpenNMT-tf's "Total prediction time"): bench/ compares it.
    args.translate_seconds = time.perf_counter() - start
    if translator.truncated:
        print(
            f"warning: {translator.truncated} input line(s) longer than decode.max_source_length="
            f"{translator.config.decode.max_source_length} tokens were cut to that length",
            file=sys.stderr,
        )
    return results


def cmd_translate(args: argparse.Namespace) -> int:
    if args.attention and args.attention_dir:
        raise NmtError("give --attention (one sentence) or --attention-dir (one map per line), not both")
    translator = _load_translator(args)  # a bad run directory fails before stdin is read
    lines = _read_input_lines(args.input)
    if args.attention and len(lines) != 1:
        raise NmtError(f"--attention {args.attention} draws one sentence, but the input has {len(lines)} lines; "
                       "use --attention-dir DIR for one map per line")
    with_attention = bool(args.attention or args.attention_dir)
    results = _translate_lines(translator, args, lines, with_attention)
    if with_attention:
        _save_attention_maps(results, lines, args)
    if args.nbest > 1:
        # n-best format: input line number (0-based) ||| translation ||| score, n lines per input.
        out_lines = [
            f"{i} ||| {h.text.replace(chr(10), ' ')} ||| {h.score:.4f}" for i, hyps in enumerate(results) for h in hyps
        ]
    else:
        out_lines = [hyps[0].text.replace("\n", " ") for hyps in results]
    _write_output(args.output, "".join(line + "\n" for line in out_lines))
    seconds = args.translate_seconds
    print(f"translated {len(lines)} line(s) in {seconds:.2f} s ({len(lines) / max(seconds, 1e-9):.1f} lines/s)",
          file=sys.stderr)
    return 0


def _save_attention_maps(results, lines: list[str], args: argparse.Namespace) -> None:
    """One heatmap per non-empty input line, of the best hypothesis: --attention PATH for a single
    sentence, --attention-dir DIR/line-00001.png ... (input line numbers) for many."""
    from nmt.visualize import save_attention

    written = 0
    for number, (hypotheses, line) in enumerate(zip(results, lines), 1):
        best = hypotheses[0]
        if best.attention is None:  # an empty line: nothing was read, nothing to draw
            continue
        path = Path(args.attention) if args.attention else Path(args.attention_dir) / f"line-{number:05d}.png"
        save_attention(path, best.source_tokens, [*best.tokens, "</s>"], best.attention, title=line.strip()[:80])
        written += 1
    where = args.attention or args.attention_dir
    print(f"wrote {written} attention map(s) to {where}", file=sys.stderr)


def _prompts(args: argparse.Namespace, given: str | None) -> list[str]:
    if given is not None and args.input:
        raise NmtError("give a prompt or --input, not both")
    return [given] if given is not None else _read_input_lines(args.input)


def cmd_next_word(args: argparse.Namespace) -> int:
    lm = _load_language_model(args)
    if not 1 <= args.k <= lm.max_k:
        raise NmtError(f"-k must be between 1 and {lm.max_k}, got {args.k}")
    prompts = _prompts(args, args.text)
    results = lm.next_words(prompts, k=args.k)
    if args.text is not None:  # one word and its probability per line
        lines = [f"{w}\t{p:.4f}" for w, p in results[0]]
    else:  # one line per prompt: word, probability, word, probability, ... tab-separated
        lines = ["\t".join(f"{w}\t{p:.4f}" for w, p in words) for words in results]
    _write_output(args.output, "".join(line + "\n" for line in lines))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    lm = _load_language_model(args)
    prompts = _prompts(args, args.prompt) if (args.prompt is not None or args.input) else [""]
    samples = [
        lm.generate(prompts, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed + n)
        for n in range(args.num)
    ]
    texts = [samples[n][i] for i in range(len(prompts)) for n in range(args.num)]  # grouped by prompt
    # Running text spans lines: its samples are separated by a blank line.
    separator = "\n\n" if lm.running_text and len(texts) > 1 else "\n"
    _write_output(args.output, separator.join(texts) + "\n")
    return 0


def cmd_evaluate_lm(args: argparse.Namespace) -> int:
    lm = _load_language_model(args)
    lines = _read_input_lines(args.text)
    bar = _progress_bar(0, "scoring")
    bar.unit = "tok"
    try:
        perplexity = lm.evaluate(lines, progress=bar.update)
    finally:
        bar.close()
    print(perplexity.summary())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nmt.config import read_run_config
    from nmt.evaluation import bleu_tokenize, score

    if args.text:
        if not args.run or args.src or args.ref or args.hyp or args.tokenize or args.beam:
            raise NmtError("--text (language-model perplexity) needs --run and none of --src/--ref/--hyp/--tokenize/--beam")
        return cmd_evaluate_lm(args)
    if not args.ref:
        raise NmtError("evaluate needs --ref (a translation test set) or --text (a language model's held-out text)")
    references = _read_input_lines(args.ref)
    if args.hyp:
        hypotheses = _read_input_lines(args.hyp)
        if len(hypotheses) != len(references):
            raise NmtError(f"{args.hyp} has {len(hypotheses)} lines but {args.ref} has {len(references)}")
        config = read_run_config(Path(args.run)) if args.run else None
    else:
        if not (args.run and args.src):
            raise NmtError("evaluate needs --run and --src (to translate), or --hyp (a finished translation)")
        translator = _load_translator(args)
        sources = _read_input_lines(args.src)
        if len(sources) != len(references):
            raise NmtError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}")
        results = _translate_lines(translator, args, sources)
        config = translator.config
        hypotheses = [hyps[0].text for hyps in results]
    if args.tokenize:
        tokenize = args.tokenize
    elif config is not None:
        tokenize = bleu_tokenize(config.data)
    else:
        tokenize = "13a"
    print(score(hypotheses, references, tokenize).summary())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.inference import LanguageModelRunner, load

    model = load(args.run, weights=args.weights)
    if isinstance(model, LanguageModelRunner):
        trace = model.trace(args.text, k=3 if args.k is None else args.k)
        what = "language model: the top layer's hidden state after each token, and the likeliest next pieces"
    else:
        if args.k is not None:
            raise NmtError("-k is for language models: a translation run shows its encoder's states")
        trace = model.trace(args.text)
        what = "translation encoder: its output after each source piece (what attention reads)"
    width = max(len(t) for t in trace.tokens)
    lines = [f"# {what}; {trace.states.shape[1]} units",
             f"{'#':>3}  {'token':<{width}}  {'norm':>7}  {'change':>7}" + ("  next" if trace.predictions else "")]
    for index, token in enumerate(trace.tokens):
        row = f"{index:>3}  {token:<{width}}  {trace.norms[index]:7.3f}  {trace.changes[index]:7.3f}"
        if trace.predictions:
            row += "  " + "  ".join(f"{piece} {p:.3f}" for piece, p in trace.predictions[index])
        lines.append(row)
    _write_output(args.output, "".join(line + "\n" for line in lines))
    if args.plot:
        from nmt.visualize import save_trace

        save_trace(args.plot, trace, title=args.text.strip()[:80])
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nmt.visualize import read_metrics, save_curves

    run = Path(args.run)
    if not run.is_dir():
        raise NmtError(f"run directory not found: {run}")
    out = Path(args.output) if args.output else run / "curves.png"
    metrics = read_metrics(run)
    save_curves(out, run)
    keys = [k for k in ("train_loss", "dev_loss", "dev_bleu", "dev_chrf", "dev_word_perplexity", "dev_bits_per_character")
            if any(k in m for m in metrics)]
    rows = [f"{'step':>8}  " + "  ".join(f"{k:>21}" for k in keys)]
    rows += [f"{m['step']:>8}  " + "  ".join(f"{m[k]:>21.4f}" if k in m else f"{'':>21}" for k in keys) for m in metrics]
    print("\n".join(rows))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import_tensorflow()
    from nmt.export import export

    path = export(args.run, args.out, version=args.version, weights=args.weights)
    print(f"exported {args.run} to {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from nmt.serve_options import run_serve

    return run_serve(args)  # checks the options, then imports TensorFlow


def weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="best", metavar="best|latest|ckpt-N",
                        help="best dev weights (default), the latest checkpoint, or one kept checkpoint by name "
                        "(ckpt-N, as in RUN/checkpoints). latest (and best before a best file exists) skips a damaged "
                        "checkpoint for the one before it, with a warning; a damaged file asked for by name is an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt",
        description="Recurrent translation and language models on TensorFlow: train, translate, evaluate, "
        "next-word, generate, inspect, report, export, serve.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    train = verbs.add_parser(
        "train",
        help="train a model from an experiment file (resumes if its run directory has checkpoints)",
        description="Reads the corpus, trains SentencePiece, trains the model, keeps the best weights on dev "
        "BLEU (a language model: dev loss) and prints the final dev scores. Everything goes into the config's run_dir; running the same "
        "command again resumes from the latest checkpoint.",
        epilog="example: nmt train --config en-ja.yaml --set train.steps=2000 --set run_dir=runs/short",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", required=True, help="YAML experiment file, or the name of a shipped one "
                       "(en-ja.yaml, en-ja-tiny.yaml, small-parallel-enja.yaml, lm-en.yaml, "
                       "char-shakespeare.yaml, ptb.yaml)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one config key, e.g. train.steps=200 (repeatable)")
    train.add_argument("--run-dir", help="where to write the run (same as --set run_dir=...)")
    train.add_argument("--restart", action="store_true", help="start over in a run directory that holds "
                       "checkpoints: deletes its checkpoints, best weights, metrics and TensorBoard logs (default: resume)")
    train.set_defaults(func=cmd_train)

    def decoding_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", required=True, help="run directory written by `nmt train`")
        p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the config's)")
        p.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default: the config's)")
        weights_option(p)

    translate = verbs.add_parser(
        "translate",
        help="translate a file or stdin, one output line per input line",
        description="Translates line by line, in batches sorted by length. An empty input line gives an empty "
        "output line. Inputs longer than decode.max_source_length tokens are cut to that length, with a "
        "warning. The output file is written atomically: it appears complete or not at all (a full disk leaves "
        "the old file as it was); an output that is the input file is refused.",
        epilog="examples:\n  nmt translate --run runs/en-ja -i in.en -o out.ja --beam 5\n"
        "  echo 'Good morning.' | nmt translate --run runs/en-ja\n"
        "  nmt translate --run runs/en-ja -i in.en --beam 5 --nbest 3   # 'line ||| text ||| score'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decoding_options(translate)
    translate.add_argument("-i", "--input", help="input file (default: stdin)")
    translate.add_argument("-o", "--output", help="output file (default: stdout)")
    translate.add_argument("--nbest", type=int, default=1, help="print the N best translations per line with scores")
    translate.add_argument("--attention", metavar="PNG", help="save the attention map of the (single) input "
                           "sentence: source pieces across, output pieces down, from the best hypothesis")
    translate.add_argument("--attention-dir", metavar="DIR", help="save one attention map per non-empty input "
                           "line, DIR/line-00001.png, ... (numbered like the input lines)")
    translate.set_defaults(func=cmd_translate)

    evaluate = verbs.add_parser(
        "evaluate",
        help="BLEU and chrF of a translation run; perplexity of a language model",
        description="Translation: translates --src with the run and scores it against --ref with sacrebleu, or "
        "scores a finished translation given with --hyp. Japanese targets are tokenized with ja-mecab, others "
        "with 13a; --tokenize overrides (use 'none' for pre-tokenized data). Prints the sacrebleu signatures.\n\n"
        "Language model: --text FILE prints the perplexity per word (total log-likelihood over the number of "
        "words + one end of line per line, comparable across word, subword and character models), bits and "
        "nats per character (newlines counted) and the loss per model token.",
        epilog="examples:\n  nmt evaluate --run runs/en-ja --src dev.en --ref dev.ja --beam 5\n"
        "  nmt evaluate --run runs/ptb --text ../shared/data/ptb/ptb.valid.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decoding_options(evaluate)
    evaluate._option_string_actions["--run"].required = False
    evaluate.add_argument("--src", help="source sentences, one per line")
    evaluate.add_argument("--ref", help="reference translations, one per line")
    evaluate.add_argument("--hyp", help="score this translation instead of translating --src")
    evaluate.add_argument("--tokenize", help="sacrebleu tokenizer: 13a, ja-mecab, zh, intl, char, none, ...")
    evaluate.add_argument("--text", help="language model: held-out text to score, one sentence (or line of running "
                          "text) per line")
    evaluate.set_defaults(func=cmd_evaluate)

    def lm_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", required=True, help="run directory of a language model (task: lm)")
        p.add_argument("-i", "--input", help="read one prompt per line from this file ('-': stdin)")
        p.add_argument("-o", "--output", help="output file (default: stdout)")
        weights_option(p)

    next_word = verbs.add_parser(
        "next-word",
        help="the most likely next words after a text, with probabilities",
        description="Prints the k most likely next whole words after TEXT, one 'word<TAB>probability' per line, best first. "
        "Words are whole even when the model's units are subwords or characters: pieces are expanded until the "
        "word ends, and a word's probability sums its segmentations. Trailing spaces do not matter; an empty "
        "TEXT asks for the first word. With --input (or neither TEXT nor --input: stdin), one line per prompt: "
        "word<TAB>probability<TAB>word<TAB>probability...",
        epilog="examples:\n  nmt next-word --run runs/lm-en \"I love eating\" -k 5\n"
        "  nmt next-word --run runs/lm-en -i prompts.txt -k 3 -o next.tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    next_word.add_argument("text", nargs="?", help="the text so far")
    next_word.add_argument("-k", type=int, default=5, help="how many words (default 5, at most 100)")
    lm_options(next_word)
    next_word.set_defaults(func=cmd_next_word)

    generate = verbs.add_parser(
        "generate",
        help="continue a prompt by sampling from a language model",
        description="Samples a continuation of --prompt (default: from nothing) token by token. --temperature 0 "
        "is greedy; --top-k and --top-p (nucleus) restrict each draw to the most likely tokens. The same --seed "
        "gives the same text. A model trained line by line stops at its end of sentence; one trained on running "
        "text (train.bptt_steps) writes line breaks and runs to --max-tokens.",
        epilog="examples:\n  nmt generate --run runs/char-shakespeare --prompt \"ROMEO:\" --max-tokens 300 "
        "--temperature 0.8 --top-p 0.9 --seed 1\n  nmt generate --run runs/lm-en --prompt \"I think\" --num 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("--prompt", help="the text to continue")
    generate.add_argument("--max-tokens", type=int, default=100, help="tokens to generate at most (default 100)")
    generate.add_argument("--temperature", type=finite_float, default=1.0, help="0 = greedy; <1 safer, >1 wilder (default 1)")
    generate.add_argument("--top-k", type=int, default=0, help="draw from the k most likely tokens only (0 = off)")
    generate.add_argument("--top-p", type=finite_float, default=1.0, help="draw from the smallest set of tokens with "
                          "this much probability (1 = off)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same text")
    generate.add_argument("--num", type=int, default=1, help="samples per prompt (seeds seed, seed+1, ...)")
    lm_options(generate)
    generate.set_defaults(func=cmd_generate)

    inspect = verbs.add_parser(
        "inspect",
        help="show the hidden state token by token (and a language model's next-token guesses)",
        description="Runs TEXT through the model one piece at a time and prints, per piece, the L2 norm of the "
        "hidden state and how far it moved from the previous piece. A language model shows its top layer "
        "(what its softmax reads; the first row is the start symbol) and its k likeliest next pieces; a "
        "translation run shows its encoder's output (both directions side by side when bidirectional). "
        "--plot also draws the units as a heatmap, a row per piece.",
        epilog="examples:\n  nmt inspect --run runs/lm-en \"The cat sat\" --plot cat.png\n"
        "  nmt inspect --run runs/en-ja \"Where is the station?\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("--run", required=True, help="run directory written by `nmt train`")
    inspect.add_argument("text", help="the text to read")
    inspect.add_argument("-k", type=int, help="language model: next pieces to show per token (default 3)")
    inspect.add_argument("--plot", metavar="PNG", help="also save the heatmap of the hidden units to this file")
    inspect.add_argument("-o", "--output", help="write the table here (default: stdout)")
    weights_option(inspect)
    inspect.set_defaults(func=cmd_inspect)

    report = verbs.add_parser(
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
    report.set_defaults(func=cmd_report)

    export = verbs.add_parser(
        "export",
        help="write a SavedModel (strings in, strings out) for TensorFlow Serving and `nmt serve`",
        description="Writes OUT/<version>/ (the next free version unless --version is given), a SavedModel "
        "whose signatures take and return strings, with the run's SentencePiece models inside the graph "
        "(tensorflow-text ops, which stock TensorFlow Serving links) and the search loops in core TensorFlow "
        "ops. Translation: translate (= serving_default; beam search with the run's decode.beam_size), "
        "translate_greedy, translate_ids, translate_attention (+ the attention map), inspect (encoder states). "
        "Language model: serving_default (the 5 most likely next words), next_words (k per row), generate, "
        "next_words_ids, inspect (hidden states and next pieces). The version directory appears complete or not "
        "at all.",
        epilog="examples:\n  nmt export --run runs/en-ja --out serve/models/en-ja\n"
        "  nmt export --run runs/lm-en --out serve/models/lm-en --version 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--run", required=True, help="run directory written by `nmt train`")
    export.add_argument("--out", required=True, help="model directory; versions go into numbered subfolders")
    export.add_argument("--version", type=int, help="version number (default: one more than the highest there)")
    weights_option(export)
    export.set_defaults(func=cmd_export)

    serve = verbs.add_parser(
        "serve",
        help="serve exported models over HTTP with TensorFlow Serving's REST API",
        description="Loads every model of a TF Serving models.config (a ModelServerConfig text proto; absolute "
        "base paths under /serve are found in the config file's folder, as serve/docker-compose.yml mounts it) "
        "and answers TF Serving's REST calls: GET /v1/models/NAME"
        "[/versions/V][/metadata], POST /v1/models/NAME[/versions/V]:predict with 'instances' or 'inputs'. Also "
        "POST /v1/translate, /v1/next-word, /v1/generate, /v1/inspect, GET /healthz, the OpenAPI page at /docs "
        "and a demo page at / (next words as you type, hidden states, attention maps). "
        "Concurrent requests are batched (up to --max-batch-size rows, waiting at most --max-wait-ms). A model "
        "that fails to load is reported and the others are served.",
        epilog="examples:\n  nmt serve --config serve/models.config --port 8501\n"
        "  curl -d '{\"instances\": [\"I love eating\"]}' localhost:8501/v1/models/lm-en:predict\n"
        "  curl -d '{\"text\": [\"Good morning.\"], \"beam\": 5}' localhost:8501/v1/translate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)
    return parser


class _StderrHandler(logging.Handler):
    """Library warnings as ``warning: message`` on whatever sys.stderr is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
        except Exception:  # noqa: BLE001 - logging must never take the command down
            self.handleError(record)


def _setup_logging() -> None:
    logger = logging.getLogger("nmt")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        check_arguments(args)
        return args.func(args)
    except NmtError as error:
        print(f"nmt: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output path in a missing or read-only folder, a full disk
        from nmt.io import is_disk_full

        if is_disk_full(error):
            where = f" while writing {error.filename}" if error.filename else ""
            print(f"nmt: error: no space left on device{where}", file=sys.stderr)
            return 2
        where = f": {error.filename}" if error.filename else ""
        print(f"nmt: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
