"""``nmt next-word``, ``nmt suggest`` and ``nmt generate``: a language model's likeliest next words,
a keyboard's suggestions (the word being typed completed, else the next words), and sampled
continuations. Defaults and limits are :mod:`nmt.signatures`' (the server's and the API's too)."""

from __future__ import annotations

import argparse
import json

from nmt import signatures
from nmt.cli.checks import check_k, finite_float
from nmt.cli.output import read_input_lines, write_lines, write_output
from nmt.cli.startup import load_predictor, weights_option


def _lm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory of a language model (task: lm)")
    parser.add_argument("-i", "--input", help="read one prompt per line from this file ('-': stdin)")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    weights_option(parser)


def add_parsers(subparsers) -> None:
    _add_next_word(subparsers)
    _add_suggest(subparsers)
    _add_generate(subparsers)


def _add_next_word(subparsers) -> None:
    next_word = subparsers.add_parser(
        "next-word",
        help="the most likely next words after a text, with probabilities",
        description="Prints the k most likely next whole words after TEXT, one 'word<TAB>probability' per line, "
        "best first. Words are whole even when the model's units are subwords or characters: pieces are "
        "expanded until the word ends, and a word's probability sums its segmentations. Trailing spaces do not "
        "matter; an empty TEXT asks for the first word. With --input (or neither TEXT nor --input: stdin), one "
        "line per prompt: word<TAB>probability<TAB>word<TAB>probability...",
        epilog="examples:\n  nmt next-word --run runs/lm-en \"I love eating\" -k 5\n"
        "  nmt next-word --run runs/lm-en -i prompts.txt -k 3 -o next.tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    next_word.add_argument("text", nargs="?", help="the text so far")
    next_word.add_argument("-k", type=int, default=signatures.DEFAULT_K,
                           help=f"how many words (default {signatures.DEFAULT_K}, at most {signatures.MAX_K})")
    _lm_options(next_word)
    next_word.set_defaults(func=run_next_word)


def _add_suggest(subparsers) -> None:
    suggest = subparsers.add_parser(
        "suggest",
        help="what a keyboard suggests: completions of the word being typed, else the next words",
        description="If TEXT ends inside a word (\"I love piz\"), prints the k likeliest completions of that word "
        "(pizza, pizzas, ...) with their probabilities given what was typed; if it ends with a space or punctuation "
        "(\"I love \"), the k likeliest next words, as next-word does. The first line says which: "
        "'completing: piz' or 'next words'; then one 'word<TAB>probability' per line, best first. Completion "
        "works whatever the model's units: the search keeps the pieces whose characters agree with the typed "
        "ones, so it finds ▁pizza although 'piz' alone is ▁pi z; a word no vocabulary word starts with gives no "
        "lines. Trailing spaces matter here (quote TEXT). With --input (or neither TEXT nor --input: stdin) or "
        "--json: one JSON object per text, {\"completing\": \"piz\", \"words\": [{\"word\": ..., "
        "\"probability\": ...}]}, as /v1/suggest answers.",
        epilog="examples:\n  nmt suggest --run runs/keyboard-en \"I love piz\"\n"
        "  nmt suggest --run runs/keyboard-en \"See you \" -k 5 --json\n"
        "  nmt suggest --run runs/keyboard-en -i typed.txt -o suggestions.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    suggest.add_argument("text", nargs="?", help="the text typed so far (its end matters: a space asks for next words)")
    suggest.add_argument("-k", type=int, default=signatures.SUGGEST_K,
                         help=f"how many words (default {signatures.SUGGEST_K}, a keyboard's strip; "
                         f"at most {signatures.MAX_K})")
    suggest.add_argument("--json", action="store_true", help="print the JSON object even for one TEXT")
    _lm_options(suggest)
    suggest.set_defaults(func=run_suggest)


def _add_generate(subparsers) -> None:
    generate = subparsers.add_parser(
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
    generate.add_argument("--max-tokens", type=int, default=signatures.DEFAULT_MAX_TOKENS,
                          help=f"tokens to generate at most (default {signatures.DEFAULT_MAX_TOKENS}, "
                          f"at most {signatures.MAX_GENERATED_TOKENS})")
    generate.add_argument("--temperature", type=finite_float, default=signatures.DEFAULT_TEMPERATURE,
                          help=f"0 = greedy; <1 safer, >1 wilder (default {signatures.DEFAULT_TEMPERATURE:g})")
    generate.add_argument("--top-k", type=int, default=signatures.DEFAULT_TOP_K,
                          help=f"draw from the k most likely tokens only (default {signatures.DEFAULT_TOP_K}: off)")
    generate.add_argument("--top-p", type=finite_float, default=signatures.DEFAULT_TOP_P,
                          help="draw from the smallest set of tokens with this much probability "
                          f"(default {signatures.DEFAULT_TOP_P:g}: off)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same text")
    generate.add_argument("--num", type=int, default=1, help="samples per prompt (seeds seed, seed+1, ...)")
    _lm_options(generate)
    generate.set_defaults(func=run_generate)


def _prompts(args: argparse.Namespace, given: str | None) -> list[str]:
    """The one prompt given on the command line, or one per line of --input (stdin without it)."""
    return [given] if given is not None else read_input_lines(args.input)


def run_next_word(args: argparse.Namespace) -> int:
    lm = load_predictor(args)
    check_k(args.k, lm.max_k)  # the model's own limit (a tiny vocabulary has fewer words)
    results = lm.next_words(_prompts(args, args.text), k=args.k)
    if args.text is not None:  # one word and its probability per line
        lines = [f"{w}\t{p:.4f}" for w, p in results[0]]
    else:  # one line per prompt: word, probability, word, probability, ... tab-separated
        lines = ["\t".join(f"{w}\t{p:.4f}" for w, p in words) for words in results]
    write_lines(args.output, lines)
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    lm = load_predictor(args)
    check_k(args.k, lm.max_k)
    results = lm.suggest(_prompts(args, args.text), k=args.k)
    if args.text is not None and not args.json:
        head = f"completing: {results[0].completing}" if results[0].completing else "next words"
        lines = [head, *(f"{w}\t{p:.4f}" for w, p in results[0].words)]
    else:
        lines = [json.dumps(result.to_json(), ensure_ascii=False) for result in results]
    write_lines(args.output, lines)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    lm = load_predictor(args)
    prompts = _prompts(args, args.prompt) if (args.prompt is not None or args.input) else [""]
    samples = [
        lm.generate(prompts, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed + n)
        for n in range(args.num)
    ]
    texts = [samples[n][i] for i in range(len(prompts)) for n in range(args.num)]  # grouped by prompt
    # Running text spans lines: its samples are separated by a blank line.
    separator = "\n\n" if lm.running_text and len(texts) > 1 else "\n"
    write_output(args.output, separator.join(texts) + "\n")
    return 0
