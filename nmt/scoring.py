"""Scores of given texts under a model (forced decoding): what ``nmt score`` prints for a
translation run (:meth:`nmt.translator.Translator.score`) and a language model
(:meth:`nmt.language_model.LanguageModelPredictor.score`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from nmt import decoding
from nmt.tokenizer import Tokenizer

END_PIECE = "</s>"  # how a score's per-piece list names the end of the sentence


@dataclasses.dataclass
class Score:
    """A given text's log-probability under the model (forced decoding, no search)."""

    log_probability: float  # log P(pieces, then EOS | source), a language model's without a source
    normalized: float  # divided by the length penalty of the search (decode.length_penalty), as search scores are
    pieces: list[str] = dataclasses.field(default_factory=list)  # the pieces, then "</s>"
    piece_scores: list[float] = dataclasses.field(default_factory=list)  # log-probability of each


def score_in_batches(
    targets: list[list[int]],
    scores_of: Callable[[list[int]], np.ndarray],
    tokenizer: Tokenizer,
    alpha: float,
    batch_size: int,
    lengths: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Score]:
    """Scores of the id lists ``targets``, forced-decoded in batches of ``batch_size`` rows, longest
    first by ``lengths`` (default: the targets' own): ``scores_of(rows)`` gives those rows'
    log-probabilities per piece [rows, pieces + 1] (EOS last, 0 past it). ``alpha``: the search's
    length penalty, which ``normalized`` divides by."""
    lengths = lengths if lengths is not None else [len(t) for t in targets]
    order = sorted(range(len(targets)), key=lambda i: -lengths[i])
    results: list[Score] = [Score(0.0, 0.0)] * len(targets)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = scores_of(chunk)
        pieces = np.array([len(targets[i]) + 1 for i in chunk])  # with EOS
        penalties = decoding.length_penalty(tf.constant(pieces), alpha).numpy()
        for row, (index, n, penalty) in enumerate(zip(chunk, pieces, penalties)):
            total = float(np.sum(rows[row, :n], dtype=np.float64))
            results[index] = Score(total, total / float(penalty),
                                   [tokenizer.id_to_piece(i) for i in targets[index]] + [END_PIECE],
                                   [float(x) for x in rows[row, :n]])
        if progress:
            progress(len(chunk))
    return results
