"""Attention over the encoder memory: Bahdanau (additive) and Luong (dot, general)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from nmt.layers.recurrent import matmul_last

GLOROT = "glorot_uniform"

# Scores at padded source positions; finite so that 0 * (-big) never makes a NaN.
_MASKED_SCORE = -1e9


class Attention(keras.layers.Layer):
    """Scores queries against memory, returns the context vectors and the attention weights.

    The part that depends only on the memory (the "keys") is computed once per sentence by
    :meth:`keys` and reused at every decoding step.

    Example:
    >>> attention = Attention("luong", "general")
    >>> memory = tf.random.normal([2, 7, 16])
    >>> keys = attention.keys(memory, query_dim=8)
    >>> context, weights = attention(tf.random.normal([2, 3, 8]), keys, memory, tf.sequence_mask([7, 4], 7))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 16), (2, 3, 7))
    """

    def __init__(self, kind: str = "luong", score: str = "general", units: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("bahdanau", "luong"):
            raise ValueError(f"attention must be 'bahdanau' or 'luong', got {kind!r}")
        if score not in ("dot", "general"):
            raise ValueError(f"attention score must be 'dot' or 'general', got {score!r}")
        self.kind = kind
        self.score = score
        self.units = units
        self._weights_made = False

    def build_for(self, memory_dim: int, query_dim: int) -> None:
        """Creates the weights; called by :meth:`keys`, which is the first use."""
        if self._weights_made:
            return
        if self.kind == "bahdanau":
            units = self.units or query_dim
            self.memory_kernel = self.add_weight(shape=(memory_dim, units), initializer=GLOROT, name="memory_kernel")
            self.query_kernel = self.add_weight(shape=(query_dim, units), initializer=GLOROT, name="query_kernel")
            self.vector = self.add_weight(shape=(units,), initializer=GLOROT, name="vector")
        elif self.score == "general":
            self.memory_kernel = self.add_weight(shape=(memory_dim, query_dim), initializer=GLOROT,
                                                 name="memory_kernel")
        elif memory_dim != query_dim:
            raise ValueError(f"dot attention needs memory size {memory_dim} == decoder size {query_dim}")
        self._weights_made = True
        self.built = True

    def keys(self, memory: tf.Tensor, query_dim: int) -> tf.Tensor:
        """[batch, source, memory_dim] -> the memory projected to what queries are compared with."""
        self.build_for(int(memory.shape[-1]), query_dim)
        if self.kind == "luong" and self.score == "dot":
            return memory
        # Cast: keys() is called directly (Seq2Seq.encode at inference), outside the Keras
        # __call__ that would autocast the float32 kernel to a mixed-precision model's float16.
        return matmul_last(memory, tf.cast(self.memory_kernel, memory.dtype))

    def call(
        self, query: tf.Tensor, keys: tf.Tensor, memory: tf.Tensor, mask: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """query [batch, steps, query_dim] (or [batch, query_dim] for one step).

        Returns context [batch, (steps,) memory_dim] and weights [batch, (steps,) source], which
        sum to 1 over the unpadded source positions.
        """
        single = query.shape.rank == 2
        if single:
            query = query[:, None, :]
        if self.kind == "bahdanau":
            projected = matmul_last(query, self.query_kernel)
            hidden = tf.tanh(projected[:, :, None, :] + keys[:, None, :, :])
            scores = tf.reduce_sum(hidden * self.vector, axis=-1)
        else:
            scores = tf.matmul(query, keys, transpose_b=True)
        scores = tf.where(mask[:, None, :], tf.cast(scores, tf.float32), _MASKED_SCORE)
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.matmul(tf.cast(weights, memory.dtype), memory)
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "score": self.score, "units": self.units}
