"""``nmt inspect``: the hidden state token by token, as a table (and a heatmap with --plot), or with
--gradients how strongly a prediction still depends on each earlier token. Whatever the run holds,
its predictor's ``inspect`` (:mod:`nmt.inspection`) says what the numbers are (their ``description``)."""

from __future__ import annotations

import argparse
import logging
import textwrap
from typing import TYPE_CHECKING

from nmt import signatures
from nmt.cli.output import write_lines
from nmt.cli.startup import load_predictor, weights_option
from nmt.errors import NmtError

if TYPE_CHECKING:
    from nmt.inspection import Gradients, HiddenStates

log = logging.getLogger("nmt.cli")

GRADIENTS_HELP = (
    "--gradients shows instead how far back the model remembers: the L2 norm of the gradient of one "
    "prediction's log-probability with respect to the input embedding of each token read before it, i.e. how "
    "strongly the prediction still depends on that token. A language model predicts the likeliest next piece "
    "after the whole text (or, with --position N, the text's own piece N+1 from pieces 0..N; the start symbol is "
    "piece 0); each row gives the token, how many pieces back it is from the predicted position, and the norm. "
    "Norms that shrink towards 0 going back are the vanishing gradient: what the model no longer uses. A "
    "translation run gives a matrix, a row per output piece of the greedy translation (with </s>) and a column "
    "per source piece: the gradient counterpart of the attention map. --plot draws bars (language model) or a "
    "heatmap (translation)."
)


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a piece index (0 is the start symbol), got {text!r}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    inspect = subparsers.add_parser(
        "inspect",
        help="show the hidden state token by token (and a language model's next-token guesses), or with "
        "--gradients how strongly a prediction depends on each earlier token",
        description=textwrap.fill(
            "Runs TEXT through the model one piece at a time and prints, per piece, the L2 norm of the hidden state "
            "and how far it moved from the previous piece. A language model shows its top layer (what its softmax "
            "reads; the first row is the start symbol) and its k likeliest next pieces; a translation run shows its "
            "encoder's output (both directions side by side when bidirectional). --plot also draws the units as a "
            "heatmap, a row per piece.", 100) + "\n\n" + textwrap.fill(GRADIENTS_HELP, 100),
        epilog="examples:\n  nmt inspect --run runs/lm-en \"The cat sat\" --plot cat.png\n"
        "  nmt inspect --run runs/lm-en \"The cat sat on the mat\" --gradients --position 3 --plot g.png\n"
        "  nmt inspect --run runs/en-ja \"Where is the station?\" --gradients",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("--run", required=True, help="run directory written by `nmt train`")
    inspect.add_argument("text", help="the text to read")
    inspect.add_argument("-k", type=int, help=f"language model: next pieces to show per token "
                         f"(default {signatures.INSPECT_K})")
    inspect.add_argument("--gradients", action="store_true",
                         help="show how strongly a prediction depends on each earlier token (gradient norms)")
    inspect.add_argument("--position", type=non_negative, metavar="N",
                         help="with --gradients, language model: predict the text's own piece N+1 from pieces 0..N "
                         "(default: the likeliest piece after the whole text)")
    inspect.add_argument("--plot", metavar="PNG", help="also save a picture to this file (the hidden units' heatmap; "
                         "with --gradients, bars or a heatmap of the gradient norms)")
    inspect.add_argument("-o", "--output", help="write the table here (default: stdout)")
    weights_option(inspect)
    inspect.set_defaults(func=run)
    return inspect


def table(states: HiddenStates) -> list[str]:
    """A header naming what the states are, then per token: index, piece, norm, change and, for a
    language model, its likeliest next pieces with their probabilities."""
    width = max(len(t) for t in states.tokens)
    lines = [f"# {states.description}; {states.states.shape[1]} units",
             f"{'#':>3}  {'token':<{width}}  {'norm':>7}  {'change':>7}" + ("  next" if states.predictions else "")]
    for index, token in enumerate(states.tokens):
        row = f"{index:>3}  {token:<{width}}  {states.norms[index]:7.3f}  {states.changes[index]:7.3f}"
        if states.predictions:
            row += "  " + "  ".join(f"{piece} {p:.3f}" for piece, p in states.predictions[index])
        lines.append(row)
    return lines


def gradient_table(gradients: Gradients) -> list[str]:
    """Language model: per token read up to the predicted position, its index, piece, distance back
    from that position and gradient norm. Translation: the matrix, a row per output piece."""
    if gradients.target_tokens:
        width = max(9, *(len(t) for t in gradients.tokens))
        label = max(len(t) for t in gradients.target_tokens)
        lines = [f"# {gradients.description}", "# rows: output pieces; columns: source pieces; entries: gradient norms",
                 f"{'':<{label}}  " + " ".join(f"{t:>{width}}" for t in gradients.tokens)]
        for token, row in zip(gradients.target_tokens, gradients.norms):
            lines.append(f"{token:<{label}}  " + " ".join(f"{value:>{width}.3e}" for value in row))
        return lines
    shown = gradients.tokens[: gradients.position + 1]
    width = max(5, *(len(t) for t in shown))
    lines = [f"# {gradients.description}; log p = {gradients.log_probability:.4f}",
             f"{'#':>3}  {'token':<{width}}  {'back':>4}  {'gradient':>10}"]
    for index, token in enumerate(shown):
        lines.append(f"{index:>3}  {token:<{width}}  {gradients.distances[index]:>4}  {gradients.norms[index]:10.3e}")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.position is not None and not args.gradients:
        raise NmtError("--position goes with --gradients")
    if args.gradients and args.k is not None:
        raise NmtError("-k is for the hidden-state table, not --gradients")
    predictor = load_predictor(args)
    if args.gradients:
        return _gradients(predictor, args)
    states = predictor.inspect.hidden_states(args.text, k=args.k)  # k: None for the predictor's default
    write_lines(args.output, table(states))
    if args.plot:
        from nmt.visualize import save_hidden_states

        save_hidden_states(args.plot, states, title=args.text.strip()[:80])
        log.info("wrote %s", args.plot)
    return 0


def _gradients(predictor, args: argparse.Namespace) -> int:
    gradients = predictor.inspect.gradients(args.text, position=args.position)
    write_lines(args.output, gradient_table(gradients))
    if args.plot:
        from nmt.visualize import save_gradients

        save_gradients(args.plot, gradients, title=args.text.strip()[:80])
        log.info("wrote %s", args.plot)
    return 0


