"""Models composed from :mod:`nmt.layers`, each with one ``step()`` for the decoding module.

:class:`Seq2Seq` translates (encoder + attention decoder); :class:`LanguageModel` is the same
decoder without an encoder.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from nmt.constants import PAD_ID
from nmt.layers import Decoder, Encoder
from nmt.layers.decoder import Context, OutputRows, State


def model_variables(model: keras.Model) -> dict[str, Any]:
    """Every variable of the model by a stable name, for ``tf.train.Checkpoint``.

    A Keras 3 model is not a TensorFlow trackable container of its variables: ``Checkpoint(model=m)``
    saves nothing of it. The variables themselves are trackable, so they are listed explicitly:
    weights by their path without the model's own (auto-numbered) name, and the dropout layers'
    random-generator states (auto-numbered paths too) by their order, so that a resumed run draws
    the same dropout masks as an uninterrupted one.
    """
    weights = {v.path.split("/", 1)[1]: v for v in model.weights}
    known = {id(v) for v in model.weights}
    generators = [v for v in model.variables if id(v) not in known]
    return {**weights, **{f"random_state_{i}": v for i, v in enumerate(generators)}}


class Seq2Seq(keras.Model):
    """Encoder-decoder translation model with attention.

    The constructor arguments are the keys of the ``model`` section of an experiment file.

    Example:
    >>> model = Seq2Seq(source_vocab_size=30, target_vocab_size=40, embedding_dim=8,
    ...                 encoder={"cell": "gru", "units": 8}, decoder={"cell": "gru", "units": 8})
    >>> batch = {"source": tf.constant([[4, 5, 6]]), "source_length": tf.constant([3]),
    ...          "target_in": tf.constant([[2, 7]])}
    >>> tuple(model(batch).shape)
    (1, 2, 40)
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_dim: int = 256,
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        tie_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.encoder_args = dict(encoder or {})
        self.decoder_args = dict(decoder or {})
        self.tie_embeddings = tie_embeddings
        self.encoder = Encoder(source_vocab_size, embedding_dim, name="encoder", **self.encoder_args)
        self.decoder = Decoder(
            target_vocab_size, embedding_dim, tie_embeddings=tie_embeddings, name="decoder", **self.decoder_args
        )

    def build(self, *args: Any, **kwargs: Any) -> None:
        # Sub-layers create their weights on first use (their input sizes depend on the config).
        self.built = True

    def encode(self, source: tf.Tensor, source_length: tf.Tensor, training: bool = False) -> tuple[Context, State]:
        """source [batch, time] ids, lengths [batch] -> decoder context and initial state."""
        memory, final = self.encoder(source, source_length, training=training)
        mask = tf.sequence_mask(source_length, tf.shape(source)[1])
        return self.decoder.prepare(memory, mask, final)

    def step(self, ids: tf.Tensor, state: State, context: Context,
             output: OutputRows | None = None) -> tuple[tf.Tensor, State, tf.Tensor]:
        """One decoding step (inference): logits [batch, vocab] ([batch, n] over the tokens of
        ``output``, a shortlist's :meth:`Decoder.output_rows`), new state, attention weights."""
        return self.decoder.step(ids, state, context, training=False, output=output)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False, project: bool = True) -> tf.Tensor:
        """Teacher-forced logits [batch, target_time, vocab] for a training batch (``project=False``:
        the vectors the softmax reads, [batch, target_time, units])."""
        context, state = self.encode(inputs["source"], inputs["source_length"], training=training)
        outputs, _ = self.decoder(inputs["target_in"], state, context, training=training, project=project)
        return outputs

    def build_weights(self) -> None:
        """Creates every weight by running a one-token batch (needed before restoring weights)."""
        one = tf.constant([[PAD_ID + 4]], tf.int32)
        self({"source": one, "source_length": tf.constant([1]), "target_in": one})

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "source_vocab_size": self.source_vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "embedding_dim": self.embedding_dim,
            "encoder": self.encoder_args,
            "decoder": self.decoder_args,
            "tie_embeddings": self.tie_embeddings,
        }


class LanguageModel(keras.Model):
    """A recurrent language model: :class:`~nmt.layers.Decoder` without an encoder or attention.

    The constructor arguments are the keys of the ``model`` section of an experiment file (the
    decoder's ``attention`` must be ``none``; there is no ``encoder``).

    Example:
    >>> lm = LanguageModel(vocab_size=40, embedding_dim=8, decoder={"cell": "lstm", "units": 8, "layers": 2})
    >>> logits, state = lm.forward(tf.constant([[2, 7, 9]]), lm.initial_state(1))
    >>> tuple(logits.shape), len(state["rnn"])
    ((1, 3, 40), 2)
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 256,
        decoder: dict[str, Any] | None = None,
        tie_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.decoder_args = {**dict(decoder or {}), "attention": "none", "bridge": "zero"}
        self.tie_embeddings = tie_embeddings
        self.decoder = Decoder(vocab_size, embedding_dim, tie_embeddings=tie_embeddings, name="decoder",
                               **self.decoder_args)

    def build(self, *args: Any, **kwargs: Any) -> None:
        self.built = True

    def initial_state(self, batch_size: Any) -> State:
        return self.decoder.initial_state(batch_size)

    def forward(
        self, ids: tf.Tensor, state: State, lengths: tf.Tensor | None = None, training: bool = False,
        project: bool = True,
    ) -> tuple[tf.Tensor, State]:
        """ids [batch, time] from ``state`` -> logits [batch, time, vocab] (``project=False``: the
        vectors the softmax reads, [batch, time, units]) and the state after the last token (after
        ``lengths[b]`` tokens of row b when given)."""
        outputs, _, final = self.decoder(ids, state, {}, training=training, lengths=lengths, return_state=True,
                                         project=project)
        return outputs, final

    def step(self, ids: tf.Tensor, state: State, context: Context) -> tuple[tf.Tensor, State, tf.Tensor]:
        """One decoding step: logits [batch, vocab], new state, attention weights [batch, 0]."""
        return self.decoder.step(ids, state, {}, training=False)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False, project: bool = True) -> tf.Tensor:
        """Logits [batch, time, vocab] for a training batch ``{"target_in"}`` from the zero state
        (``project=False``: the vectors the softmax reads)."""
        target_in = inputs["target_in"]
        outputs, _ = self.forward(target_in, self.initial_state(tf.shape(target_in)[0]), training=training,
                                  project=project)
        return outputs

    def build_weights(self) -> None:
        self({"target_in": tf.constant([[PAD_ID + 4]], tf.int32)})

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "decoder": {k: v for k, v in self.decoder_args.items() if k not in ("attention", "bridge")},
            "tie_embeddings": self.tie_embeddings,
        }
