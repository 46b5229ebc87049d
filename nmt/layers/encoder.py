"""The source encoder: embeddings, then stacked (optionally bidirectional) recurrent layers."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from nmt.layers.recurrent import CELL_STATES, Recurrent


class Encoder(keras.layers.Layer):
    """Token ids -> memory (one vector per source position) and a summary of the final states.

    Padding never leaks into the result: every recurrent layer stops at each sentence's length, so
    a padded batch encodes each sentence exactly as it would be encoded alone.

    Example:
    >>> encoder = Encoder(vocab_size=100, embedding_dim=8, cell="gru", units=16, bidirectional=True)
    >>> memory, final = encoder(tf.constant([[5, 6, 7], [8, 9, 0]]), tf.constant([3, 2]))
    >>> tuple(memory.shape), tuple(final.shape)
    ((2, 3, 32), (2, 32))
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 256,
        cell: str = "lstm",
        units: int = 256,
        layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.2,
        embedding_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.units = units
        self.num_layers = layers
        self.bidirectional = bidirectional
        self.dropout_rate = dropout
        self.embedding_dropout_rate = embedding_dropout
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.forward_layers = [Recurrent(cell, units, name=f"forward_{i}") for i in range(layers)]
        self.backward_layers = (
            [Recurrent(cell, units, name=f"backward_{i}") for i in range(layers)] if bidirectional else []
        )
        self.dropout = keras.layers.Dropout(dropout)
        # Unset: the same layer as the rest, so runs without the option keep their random state layout.
        self.embedding_dropout = self.dropout if embedding_dropout is None else keras.layers.Dropout(embedding_dropout)

    def build(self, *args: Any, **kwargs: Any) -> None:
        # Sub-layers create their weights on first use (their input sizes depend on the config).
        self.built = True

    @property
    def output_dim(self) -> int:
        return self.units * (2 if self.bidirectional else 1)

    @property
    def final_dim(self) -> int:
        """Size of the final-state summary: every state tensor of the top layer, both directions."""
        return self.output_dim * CELL_STATES[self.cell]

    def call(self, ids: tf.Tensor, lengths: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.embedding_dropout(self.embedding(ids), training=training)
        final: tuple[tf.Tensor, ...] = ()
        for i, forward in enumerate(self.forward_layers):
            outputs, final = forward(x, lengths)
            if self.bidirectional:
                backward_outputs, backward_final = self.backward_layers[i](x, lengths, reverse=True)
                outputs = tf.concat([outputs, backward_outputs], axis=-1)
                final = final + backward_final
            x = self.dropout(outputs, training=training) if i + 1 < self.num_layers else outputs
        return x, tf.concat(final, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "cell": self.cell,
            "units": self.units,
            "layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout_rate,
            "embedding_dropout": self.embedding_dropout_rate,
        }
