"""``nmt translate`` and ``nmt evaluate``: translation line by line (n-best, attention maps), BLEU and
chrF of a translation, and a language model's perplexity on held-out text."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from nmt.cli.checks import finite_float
from nmt.cli.output import progress_bar, read_input_lines, write_lines
from nmt.cli.startup import load_predictor, weights_option
from nmt.errors import NmtError

log = logging.getLogger("nmt.cli")


def _decoding_options(parser: argparse.ArgumentParser, run_required: bool = True) -> None:
    parser.add_argument("--run", required=run_required, action="append",
                        help="run directory written by `nmt train`; give it again (--run A --run B) to decode with "
                        "an ensemble of the runs (their vocabularies must be the same)")
    parser.add_argument("--ensemble-mode", choices=("log_probs", "probs"), default="log_probs",
                        help="how an ensemble (several --run, or --weights A,B) combines its models at each step: "
                        "the mean of their log-probabilities (default) or of their probabilities")
    parser.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the config's)")
    parser.add_argument("--length-penalty", type=finite_float, default=None, metavar="ALPHA",
                        help="GNMT length penalty of the beam search: scores are divided by ((5 + length) / 6) ** "
                        "ALPHA, so larger values favour longer outputs; 0 turns it off (default: the config's "
                        "decode.length_penalty; choose it on dev with bench/decode_sweep.py)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default: the config's)")
    parser.add_argument("--shortlist", action=argparse.BooleanOptionalAction, default=None,
                        help="decode over each batch's vocabulary shortlist (build it with nmt shortlist): faster, "
                        "and only pieces inside it can be output (default: the config's decode.shortlist)")
    weights_option(parser)


def add_parsers(subparsers) -> None:
    _add_translate(subparsers)
    _add_evaluate(subparsers)
    _add_score(subparsers)


def _add_score(subparsers) -> None:
    score = subparsers.add_parser(
        "score",
        help="the log-probability of given translations under a model (forced decoding, no search)",
        description="Prints one line per --src/--tgt pair: log P(target | source), the sum over the target's "
        "pieces and the end of sentence, in one teacher-forced pass per batch (no search). Uses: filtering "
        "noisy pairs, reranking n-best lists, a perplexity per sentence. A target is scored as the run's "
        "SentencePiece segments it, which can differ from the pieces a search produced for the same text. "
        "Sources are cut to decode.max_source_length as translate cuts them; targets are scored whole. An empty "
        "target line scores the empty translation (the end of sentence alone); an empty source line is an error "
        "naming the line. A language model (--text): each line's log-probability on its own.",
        epilog="examples:\n  nmt score --run runs/en-ja --src dev.en --tgt dev.hyp.ja\n"
        "  nmt score --run runs/en-ja --src dev.en --tgt dev.ja --normalize --word-scores\n"
        "  nmt score --run runs/en-ja --src dev.en --tgt dev.ja --json > scores.jsonl\n"
        "  nmt score --run runs/lm-en --text sentences.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("--run", required=True, help="run directory written by `nmt train`")
    score.add_argument("--src", help="translation: source sentences, one per line")
    score.add_argument("--tgt", help="translation: their translations, one per line")
    score.add_argument("--text", help="language model: lines to score, each on its own (its pieces, then the end)")
    score.add_argument("--normalize", action="store_true",
                       help="divide by the search's length penalty ((5 + pieces + 1) / 6) ** decode.length_penalty, "
                       "as translate's scores are")
    score.add_argument("--length-penalty", type=finite_float, default=None, metavar="ALPHA",
                       help="the penalty --normalize divides by (default: the config's decode.length_penalty)")
    score.add_argument("--word-scores", action="store_true",
                       help="also print each piece's log-probability: 'score ||| piece score piece score ...'")
    score.add_argument("--json", action="store_true",
                       help="one JSON object per line: log_probability, normalized, pieces, piece_scores")
    score.add_argument("--batch-size", type=int, default=None, help="pairs per batch (default: decode.batch_size)")
    score.add_argument("-o", "--output", help="output file (default: stdout)")
    weights_option(score)
    score.set_defaults(func=run_score)


def run_score(args: argparse.Namespace) -> int:
    import json

    if args.text:
        predictor = load_predictor(args)
        sources = read_input_lines(args.text)
    else:
        predictor = _load_translator(args)
        sources, targets = read_input_lines(args.src), read_input_lines(args.tgt)
        _same_length(targets, sources, args.tgt, args.src)
    bar = progress_bar(len(sources), "scoring", quiet=args.quiet)
    start = time.perf_counter()
    try:
        if args.text:
            scores = predictor.score(sources, batch_size=args.batch_size or 64, progress=bar.update)
        else:
            scores = predictor.score(sources, targets, batch_size=args.batch_size, progress=bar.update)
    finally:
        bar.close()
    if not args.text and predictor.truncated:
        log.warning("%d source line(s) longer than decode.max_source_length=%d tokens were cut to that length",
                    predictor.truncated, predictor.config.decode.max_source_length)
    lines = []
    for result in scores:
        value = result.normalized if args.normalize else result.log_probability
        if args.json:
            lines.append(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
        elif args.word_scores:
            pieces = " ".join(f"{piece} {score:.4f}" for piece, score in zip(result.pieces, result.piece_scores))
            lines.append(f"{value:.4f} ||| {pieces}")
        else:
            lines.append(f"{value:.4f}")
    write_lines(args.output, lines)
    log.info("scored %d pair(s) in %.2f s", len(sources), time.perf_counter() - start)
    return 0


def _add_translate(subparsers) -> None:
    translate = subparsers.add_parser(
        "translate",
        help="translate a file or stdin, one output line per input line",
        description="Translates line by line, in batches sorted by length. An empty input line gives an empty "
        "output line. Inputs longer than decode.max_source_length tokens are cut to that length, with a "
        "warning. The output file is written atomically: it appears complete or not at all (a full disk leaves "
        "the old file as it was); an output that is the input file is refused.",
        epilog="examples:\n  nmt translate --run runs/en-ja -i in.en -o out.ja --beam 5\n"
        "  echo 'Good morning.' | nmt translate --run runs/en-ja\n"
        "  nmt translate --run runs/en-ja -i in.en --beam 5 --nbest 3   # 'line ||| text ||| score'\n"
        "  nmt translate --run runs/en-ja -i in.en --beam 5 --length-penalty 1.4   # higher: longer outputs\n"
        "  echo '{\"text\": \"Where is Tokyo Station?\", \"constraints\": [\"東京駅\"], \"avoid\": [\"新宿\"]}' \\\n"
        "    | nmt translate --run runs/en-ja --json-input --beam 5   # terminology",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _decoding_options(translate)
    translate.add_argument("-i", "--input", help="input file (default: stdin)")
    translate.add_argument("-o", "--output", help="output file (default: stdout)")
    translate.add_argument("--json-input", action="store_true",
                           help="each input line is a JSON object: {\"text\": ..., \"constraints\": [phrases the "
                           "translation must contain], \"avoid\": [phrases it must not]} (both optional; a blank line "
                           "is an empty input). Lines with terminology decode with a constrained beam search (Post & "
                           "Vilar's dynamic beam allocation) over the whole vocabulary; a best translation that still "
                           "breaks its terminology (no room in the beam or the length limit) is named in a warning")
    translate.add_argument("--nbest", type=int, default=1, help="print the N best translations per line with scores")
    translate.add_argument("--attention", metavar="PNG", help="save the attention map of the (single) input "
                           "sentence: source pieces across, output pieces down, from the best hypothesis")
    translate.add_argument("--attention-dir", metavar="DIR", help="save one attention map per non-empty input "
                           "line, DIR/line-00001.png, ... (numbered like the input lines)")
    translate.set_defaults(func=run_translate)


def _add_evaluate(subparsers) -> None:
    evaluate = subparsers.add_parser(
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
    _decoding_options(evaluate, run_required=False)
    evaluate.add_argument("--src", help="source sentences, one per line")
    evaluate.add_argument("--ref", help="reference translations, one per line")
    evaluate.add_argument("--hyp", help="score this translation instead of translating --src")
    evaluate.add_argument("--tokenize", help="sacrebleu tokenizer: 13a, ja-mecab, zh, intl, char, none, ...")
    evaluate.add_argument("--text", help="language model: held-out text to score, one sentence (or line of running "
                          "text) per line")
    evaluate.set_defaults(func=run_evaluate)


def _json_inputs(lines: list[str], name: str) -> tuple[list[str], list]:
    """--json-input: each line's text and terminology (NmtError naming the file, line and key)."""
    import json

    from nmt.constraints import Terminology, terminology_from_json

    texts, terminology = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            texts.append("")
            terminology.append(Terminology())
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise NmtError(f"{name} line {number}: not JSON ({error.msg} at column {error.colno})") from None
        text, item = terminology_from_json(f"{name} line {number}", value)
        texts.append(text)
        terminology.append(item)
    return texts, terminology


def _translate_lines(translator, args: argparse.Namespace, lines: list[str], with_attention: bool = False,
                     terminology: list | None = None):
    """The n-best lists of ``lines``, and the seconds of translation alone (model loading and tracing
    excluded, as OpenNMT-tf's "Total prediction time": bench/ compares it)."""
    translator.prepare(args.beam)  # traced before the clock starts
    bar = progress_bar(len(lines), "translating", quiet=args.quiet)
    start = time.perf_counter()
    try:
        results = translator.translate(
            lines, beam_size=args.beam, nbest=getattr(args, "nbest", 1), batch_size=args.batch_size,
            with_attention=with_attention, progress=bar.update, terminology=terminology,
        )
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if translator.truncated:
        log.warning("%d input line(s) longer than decode.max_source_length=%d tokens were cut to that length",
                    translator.truncated, translator.config.decode.max_source_length)
    return results, seconds


def _load_translator(args: argparse.Namespace):
    translator = load_predictor(args)
    if args.length_penalty is not None:
        translator = translator.with_decode(length_penalty=args.length_penalty)
    return translator


def run_translate(args: argparse.Namespace) -> int:
    translator = _load_translator(args)  # a bad run directory fails before stdin is read
    lines = read_input_lines(args.input)
    terminology = None
    if args.json_input:
        lines, terminology = _json_inputs(lines, args.input or "<stdin>")
    if args.attention and len(lines) != 1:
        raise NmtError(f"--attention {args.attention} draws one sentence, but the input has {len(lines)} lines; "
                       "use --attention-dir DIR for one map per line")
    with_attention = bool(args.attention or args.attention_dir)
    results, seconds = _translate_lines(translator, args, lines, with_attention, terminology)
    if with_attention:
        _save_attention_maps(results, lines, args)
    if args.nbest > 1:
        # n-best format: input line number (0-based) ||| translation ||| score, n lines per input.
        out_lines = [f"{i} ||| {h.text.replace(chr(10), ' ')} ||| {h.score:.4f}"
                     for i, hyps in enumerate(results) for h in hyps]
    else:
        out_lines = [hyps[0].text.replace("\n", " ") for hyps in results]
    write_lines(args.output, out_lines)
    log.info("translated %d line(s) in %.2f s (%.1f lines/s)", len(lines), seconds, len(lines) / max(seconds, 1e-9))
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
    log.info("wrote %d attention map(s) to %s", written, args.attention or args.attention_dir)


def run_evaluate(args: argparse.Namespace) -> int:
    """The combinations of options were checked before (checks._check_evaluate)."""
    if args.text:
        return _evaluate_language_model(args)
    from nmt.evaluation import bleu_tokenize, score
    from nmt.run_dir import RunDir

    references = read_input_lines(args.ref)
    if args.hyp:
        hypotheses = _same_length(read_input_lines(args.hyp), references, args.hyp, args.ref)
        config = RunDir(Path(args.run)).read_config() if args.run else None
    else:
        translator = _load_translator(args)
        sources = _same_length(read_input_lines(args.src), references, args.src, args.ref)
        hypotheses = [hyps[0].text for hyps in _translate_lines(translator, args, sources)[0]]
        config = translator.config
    tokenize = args.tokenize or (bleu_tokenize(config.data) if config is not None else "13a")
    print(score(hypotheses, references, tokenize).summary())
    return 0


def _same_length(lines: list[str], references: list[str], path: str, reference_path: str) -> list[str]:
    if len(lines) != len(references):
        raise NmtError(f"{path} has {len(lines)} lines but {reference_path} has {len(references)}")
    return lines


def _evaluate_language_model(args: argparse.Namespace) -> int:
    from nmt.perplexity import evaluate_perplexity

    lm = load_predictor(args)
    lines = read_input_lines(args.text)
    bar = progress_bar(0, "scoring", unit="tok", quiet=args.quiet)
    try:
        perplexity = evaluate_perplexity(lm, lines, progress=bar.update)
    finally:
        bar.close()
    print(perplexity.summary())
    return 0
