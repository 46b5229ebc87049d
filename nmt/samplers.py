"""Samplers: how a sampling search draws each next token from the logits (temperature, top-k,
top-p), as objects that :func:`nmt.decoding.sample` and the exported generate signature take."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from nmt.constants import LOG_ZERO


class Sampler:
    """Chooses the next token from logits: greedy (``temperature`` 0), or a random draw at
    ``temperature`` from the ``top_k`` most likely tokens (0: all) whose cumulated probability
    reaches ``top_p`` (nucleus sampling; 1.0: all).

    Each parameter is a Python number, a scalar tensor or one value per row ([batch]): an exported
    signature takes them as inputs, and a server may batch requests with different settings. Draws
    are stateless and per row (Gumbel-max with noise seeded by the row's seed and the step), so a
    row's text depends on its own prompt, settings and seed only: the same in eager mode, inside
    ``tf.function``, in a SavedModel, alone or batched with others.

    Example:
    >>> sampler = Sampler(temperature=0.8, top_k=2)
    >>> logits = tf.math.log([[0.1, 0.6, 0.3]])
    >>> int(Sampler()(logits, seed=1, step=0)[0])  # greedy
    1
    >>> bool(sampler(logits, seed=1, step=0)[0] in (1, 2))
    True
    """

    def __init__(
        self, temperature: float | tf.Tensor = 0.0, top_k: int | tf.Tensor = 0, top_p: float | tf.Tensor = 1.0
    ) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p

    @staticmethod
    def _per_row(value: Any, batch: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        return tf.broadcast_to(tf.cast(value, dtype), [batch])

    def filtered_logits(self, logits: tf.Tensor) -> tf.Tensor:
        """Logits [batch, vocab] at the temperature, with tokens outside top-k / top-p at -1e9."""
        logits = tf.cast(logits, tf.float32)
        batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
        temperature = self._per_row(self.temperature, batch, tf.float32)
        top_p = self._per_row(self.top_p, batch, tf.float32)
        logits = logits / tf.maximum(temperature, 1e-6)[:, None]
        ordered = tf.sort(logits, axis=-1, direction="DESCENDING")
        k = self._per_row(self.top_k, batch, tf.int32)
        k = tf.where(k > 0, tf.minimum(k, vocab), vocab)
        kth = tf.gather(ordered, k - 1, axis=-1, batch_dims=1)[:, None]
        # Nucleus: keep the smallest prefix of the ordered tokens whose probability reaches top_p
        # (always at least the first token).
        probs = tf.nn.softmax(ordered)
        before = tf.cumsum(probs, axis=-1, exclusive=True)
        inside = before < top_p[:, None]
        last_inside = tf.reduce_sum(tf.cast(inside, tf.int32), axis=-1)
        pth = tf.gather(ordered, tf.maximum(last_inside, 1) - 1, axis=-1, batch_dims=1)[:, None]
        # top_p 1 is off even where the float32 running sum reaches 1 before the last token.
        pth = tf.where(top_p[:, None] >= 1.0, tf.reduce_min(logits, axis=-1, keepdims=True), pth)
        threshold = tf.maximum(kth, pth)
        return tf.where(logits >= threshold, logits, LOG_ZERO)

    def __call__(self, logits: tf.Tensor, seed: Any, step: Any) -> tf.Tensor:
        """logits [batch, vocab] -> token ids [batch] (int32). ``seed``: a scalar or one per row;
        ``step``: the position, so that every step draws fresh noise."""
        batch, vocab = tf.shape(logits)[0], tf.shape(logits)[1]
        greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
        seeds = tf.stack([self._per_row(seed, batch, tf.int32), tf.fill([batch], tf.cast(step, tf.int32))], axis=1)
        uniform = tf.map_fn(
            lambda row_seed: tf.random.stateless_uniform([vocab], row_seed, minval=1e-9, maxval=1.0),
            seeds, fn_output_signature=tf.float32,
        )
        neg_gumbel = tf.math.log(-tf.math.log(uniform))  # minus the Gumbel noise
        drawn = tf.argmax(self.filtered_logits(logits) - neg_gumbel, axis=-1, output_type=tf.int32)
        return tf.where(self._per_row(self.temperature, batch, tf.float32) > 0, drawn, greedy)
