"""Ensembles: several translation models decoding as one, through the one :meth:`step` every
search drives.

Each member keeps its own encoder states, decoder state and attention; at every step the members'
next-token distributions are combined: ``log_probs`` (the default) averages their log-probabilities
(a renormalised geometric mean: the search's softmax renormalises it), ``probs`` averages the
probabilities (log of the mean, already normalised). The attention returned is the members' mean.
The members must share the source and target vocabularies (:func:`check_same_vocabularies`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

ENSEMBLE_MODES = ("log_probs", "probs")


def check_same_vocabularies(names: Sequence[str], models: Sequence[tuple[bytes, bytes]]) -> None:
    """ValueError naming the first member whose SentencePiece models (source, target) differ from
    the first member's: the ensemble averages distributions over one vocabulary."""
    for name, (source, target) in zip(names[1:], models[1:]):
        for side, mine, first in (("source", source, models[0][0]), ("target", target, models[0][1])):
            if mine != first:
                raise ValueError(f"{name}'s {side} SentencePiece model differs from {names[0]}'s: an ensemble's "
                                 "members must share the vocabularies (train them with the same tokenizer, e.g. "
                                 "train.init_from, or average checkpoints of one run)")


class Ensemble(keras.Model):
    """Seq2Seq models as one: ``encode`` and ``step`` as :class:`nmt.models.Seq2Seq`'s, over a tuple
    of each member's context and state; called on a batch, the combined log-probabilities
    (teacher forcing: what scoring reads)."""

    def __init__(self, members: Sequence[keras.Model], mode: str = "log_probs", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"ensemble mode must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = list(members)
        self.mode = mode
        self.built = True  # the members come built (and trained); the ensemble adds no weights

    @property
    def decoder(self) -> Any:
        raise AttributeError("an ensemble has no single output layer: vocabulary shortlists and inspection "
                             "work on one model")

    def _combine(self, logits: Sequence[tf.Tensor]) -> tf.Tensor:
        log_probs = tf.stack([tf.nn.log_softmax(tf.cast(x, tf.float32)) for x in logits])
        if self.mode == "log_probs":
            return tf.reduce_mean(log_probs, axis=0)
        return tf.reduce_logsumexp(log_probs, axis=0) - math.log(len(logits))

    def encode(self, source: tf.Tensor, source_length: tf.Tensor, training: bool = False) -> tuple[tuple, tuple]:
        encoded = [member.encode(source, source_length, training=training) for member in self.members]
        return tuple(c for c, _ in encoded), tuple(s for _, s in encoded)

    def step(self, ids: tf.Tensor, state: tuple, context: tuple,
             output: Any = None) -> tuple[tf.Tensor, tuple, tf.Tensor]:
        if output is not None:
            raise ValueError("vocabulary shortlists decode one model, not an ensemble")
        steps = [member.step(ids, s, c) for member, s, c in zip(self.members, state, context)]
        attention = tf.reduce_mean(tf.stack([tf.cast(a, tf.float32) for _, _, a in steps]), axis=0)
        return self._combine([logits for logits, _, _ in steps]), tuple(s for _, s, _ in steps), attention

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self._combine([member(inputs, training=training) for member in self.members])
