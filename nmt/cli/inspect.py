"""``nmt inspect``: the hidden state token by token, as a table (and a heatmap with --plot). Whatever
the run holds, its predictor's ``trace`` says what the states are (``Trace.description``)."""

from __future__ import annotations

import argparse
import logging

from nmt import signatures
from nmt.cli.output import write_lines
from nmt.cli.startup import load_predictor, weights_option

log = logging.getLogger("nmt.cli")


def add_parser(subparsers) -> argparse.ArgumentParser:
    inspect = subparsers.add_parser(
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
    inspect.add_argument("-k", type=int, help=f"language model: next pieces to show per token "
                         f"(default {signatures.INSPECT_K})")
    inspect.add_argument("--plot", metavar="PNG", help="also save the heatmap of the hidden units to this file")
    inspect.add_argument("-o", "--output", help="write the table here (default: stdout)")
    weights_option(inspect)
    inspect.set_defaults(func=run)
    return inspect


def table(trace) -> list[str]:
    """A header naming what the states are, then per token: index, piece, norm, change and, for a
    language model, its likeliest next pieces with their probabilities."""
    width = max(len(t) for t in trace.tokens)
    lines = [f"# {trace.description}; {trace.states.shape[1]} units",
             f"{'#':>3}  {'token':<{width}}  {'norm':>7}  {'change':>7}" + ("  next" if trace.predictions else "")]
    for index, token in enumerate(trace.tokens):
        row = f"{index:>3}  {token:<{width}}  {trace.norms[index]:7.3f}  {trace.changes[index]:7.3f}"
        if trace.predictions:
            row += "  " + "  ".join(f"{piece} {p:.3f}" for piece, p in trace.predictions[index])
        lines.append(row)
    return lines


def run(args: argparse.Namespace) -> int:
    trace = load_predictor(args).trace(args.text, k=args.k)  # k: None for the predictor's default
    write_lines(args.output, table(trace))
    if args.plot:
        from nmt.visualize import save_trace

        save_trace(args.plot, trace, title=args.text.strip()[:80])
        log.info("wrote %s", args.plot)
    return 0
