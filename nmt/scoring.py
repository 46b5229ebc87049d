"""Scores of given texts under a model (forced decoding): what ``nmt score`` prints for a
translation run (:meth:`nmt.translator.Translator.score`) and a language model
(:meth:`nmt.language_model.LanguageModelPredictor.score`)."""

from __future__ import annotations

import dataclasses

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

    @classmethod
    def of(cls, tokenizer: Tokenizer, ids: list[int], row: np.ndarray, alpha: float) -> Score:
        """The score of ``ids`` from its row of forced-decoding log-probabilities (EOS last)."""
        piece_scores = [float(x) for x in row[: len(ids) + 1]]
        total = float(np.sum(row[: len(ids) + 1], dtype=np.float64))
        penalty = float(decoding.length_penalty(tf.constant(len(ids) + 1), alpha))
        return cls(total, total / penalty, [tokenizer.id_to_piece(i) for i in ids] + [END_PIECE], piece_scores)

