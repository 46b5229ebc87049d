"""The recurrent decoder: one :meth:`Decoder.step` that every decoding strategy drives.

With attention it is the decoder of a translation model; without (``attention="none"``) and with
no encoder at all it is a language model. Training runs the same computation over a whole target
sentence (teacher forcing). When no step depends on the previous step's attention (Luong without
input feeding, or no attention), the recurrent layers run as whole-sequence ops and attention is one
batched matmul over all steps (the fast path). Otherwise training loops over the recurrence of
:meth:`step` and projects all steps onto the vocabulary at once afterwards. Both paths give the
same numbers.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from nmt.layers.attention import Attention
from nmt.layers.recurrent import Recurrent, matmul_last

# Decoder state: {"rnn": per-layer state tuples, "feed": previous attentional vector (input feeding)}.
State = dict[str, Any]
# What the decoder reads from the encoder at every step: {"memory", "keys", "mask"}.
Context = dict[str, tf.Tensor]
# The output layer's weights and bias for some tokens only (Decoder.output_rows: a shortlist).
OutputRows = tuple[tf.Tensor, tf.Tensor]


class Decoder(keras.layers.Layer):
    """Stacked recurrent decoder, with or without attention, and a softmax over the vocabulary.

    Example:
    >>> decoder = Decoder(vocab_size=50, embedding_dim=8, cell="lstm", units=16)
    >>> context, state = decoder.prepare(tf.random.normal([2, 4, 16]), tf.sequence_mask([4, 2], 4),
    ...                                  tf.random.normal([2, 32]))
    >>> logits, state, weights = decoder.step(tf.constant([2, 2]), state, context)
    >>> tuple(logits.shape), tuple(weights.shape)
    ((2, 50), (2, 4))

    Without attention (a language model), the context is empty:
    >>> lm = Decoder(vocab_size=50, embedding_dim=8, cell="gru", units=16, attention="none", bridge="zero")
    >>> logits, weights, state = lm(tf.constant([[2, 7, 9]]), lm.initial_state(1), {}, return_state=True)
    >>> tuple(logits.shape), tuple(weights.shape), tuple(state["rnn"][0][0].shape)
    ((1, 3, 50), (1, 3, 0), (1, 16))
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 256,
        cell: str = "lstm",
        units: int = 256,
        layers: int = 1,
        attention: str = "luong",
        attention_score: str = "general",
        input_feeding: bool = False,
        dropout: float = 0.2,
        embedding_dropout: float | None = None,
        bridge: str = "dense",
        tie_embeddings: bool = False,
        output_projection: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tie_embeddings and embedding_dim != (output_projection or units):
            raise ValueError("tie_embeddings needs embedding_dim == output_projection (or units without one)")
        if attention == "none" and input_feeding:
            raise ValueError("input_feeding needs attention")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.cell = cell
        self.units = units
        self.num_layers = layers
        self.attention_kind = attention
        self.attention_score = attention_score
        self.input_feeding = input_feeding
        self.dropout_rate = dropout
        self.embedding_dropout_rate = embedding_dropout
        self.bridge = bridge
        self.tie_embeddings = tie_embeddings
        self.output_projection_dim = output_projection
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.rnn_layers = [Recurrent(cell, units, name=f"rnn_{i}") for i in range(layers)]
        if attention == "none":
            self.attention = self.attentional = None
        else:
            self.attention = Attention(attention, attention_score, name="attention")
            self.attentional = keras.layers.Dense(units, activation="tanh", use_bias=False, name="attentional")
        self.dropout = keras.layers.Dropout(dropout)
        # Unset: the same layer as the rest, so runs without the option keep their random state layout.
        self.embedding_dropout = self.dropout if embedding_dropout is None else keras.layers.Dropout(embedding_dropout)
        self.bridge_dense = keras.layers.Dense(self._state_size, name="bridge") if bridge == "dense" else None
        # units -> output_projection, linear (as an LSTM's projection layer, Sak et al. 2014), before the softmax.
        self.pre_output = (keras.layers.Dense(output_projection, use_bias=False, name="pre_output")
                           if output_projection else None)
        if tie_embeddings:
            self.output_projection = None
            self.output_bias = self.add_weight(shape=(vocab_size,), initializer="zeros", name="output_bias")
        else:
            self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")

    def build(self, *args: Any, **kwargs: Any) -> None:
        # Sub-layers create their weights on first use (their input sizes depend on the config).
        self.built = True

    @property
    def _states_per_layer(self) -> int:
        return self.rnn_layers[0].state_count

    @property
    def _state_size(self) -> int:
        return self.num_layers * self._states_per_layer * self.units

    @property
    def fast_path(self) -> bool:
        return self.attention_kind in ("luong", "none") and not self.input_feeding

    # --- state -------------------------------------------------------------------------------

    def initial_state(self, batch_size: Any) -> State:
        """Zeros: the state of a language model before its first token."""
        state: State = {"rnn": tuple(layer.initial_state(batch_size) for layer in self.rnn_layers)}
        if self.input_feeding:
            state["feed"] = tf.zeros([batch_size, self.units])
        return state

    def prepare(self, memory: tf.Tensor, mask: tf.Tensor, encoder_final: tf.Tensor) -> tuple[Context, State]:
        """Precomputes the attention keys and the initial state (through the bridge)."""
        if self.attention is None:
            context = {"mask": mask}  # only its shape is used: attention weights are zeros
        else:
            context = {"memory": memory, "keys": self.attention.keys(memory, self.units), "mask": mask}
        batch = tf.shape(memory)[0]
        if self.bridge_dense is not None:
            flat = self.bridge_dense(encoder_final)
            parts = tf.split(flat, self.num_layers * self._states_per_layer, axis=-1)
            k = self._states_per_layer
            rnn = tuple(tuple(parts[i * k : (i + 1) * k]) for i in range(self.num_layers))
        else:
            rnn = tuple(layer.initial_state(batch) for layer in self.rnn_layers)
        state: State = {"rnn": rnn}
        if self.input_feeding:
            state["feed"] = tf.zeros([batch, self.units], dtype=memory.dtype)
        return context, state

    # --- one step ----------------------------------------------------------------------------

    def _softmax_input(self, attentional: tf.Tensor) -> tf.Tensor:
        """What the softmax reads: the attentional vector, through ``output_projection`` if set."""
        return attentional if self.pre_output is None else self.pre_output(attentional)

    def _logits(self, attentional: tf.Tensor, output: OutputRows | None = None) -> tf.Tensor:
        attentional = self._softmax_input(attentional)
        if output is not None:  # a shortlist's rows, laid out as the whole layer's: the same kernels
            weights, bias = (tf.cast(t, attentional.dtype) for t in output)
            if self.output_projection is not None:
                logits = tf.add(tf.matmul(attentional, weights), bias)
            else:
                logits = matmul_last(attentional, weights, transpose_w=True) + bias
        elif self.output_projection is not None:
            logits = self.output_projection(attentional)
        else:
            matrix = tf.cast(self.embedding.embeddings, attentional.dtype)
            logits = matmul_last(attentional, matrix, transpose_w=True) + tf.cast(self.output_bias, attentional.dtype)
        return tf.cast(logits, tf.float32)  # softmax and loss in float32 under mixed precision

    def output_rows(self, ids: tf.Tensor) -> OutputRows:
        """The output layer cut to the tokens ``ids`` [n] (a vocabulary shortlist), in the layer's own
        layout (the kernel's columns [units, n], or the tied embedding's rows [n, units]) so that
        :meth:`step` with them runs the whole layer's matmul on fewer columns: the same logits, bit
        for bit, for the tokens kept."""
        if self.output_projection is not None:
            return tf.gather(self.output_projection.kernel, ids, axis=1), tf.gather(self.output_projection.bias, ids)
        return tf.gather(self.embedding.embeddings, ids), tf.gather(self.output_bias, ids)

    def output_weights(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The softmax's weights as rows per token, [vocab, units], and its bias [vocab]: what a
        sampled softmax gathers a few rows of (the tied embedding matrix when embeddings are tied)."""
        if self.output_projection is not None:
            return tf.transpose(self.output_projection.kernel), self.output_projection.bias
        return self.embedding.embeddings, self.output_bias

    def _recur_embedded(
        self, embedded: tf.Tensor, state: State, context: Context, training: bool, rnn_weights: list | None = None
    ) -> tuple[tf.Tensor, State, tf.Tensor]:
        """One step up to the attentional vector (what the softmax reads): [batch, units], the
        new state and the attention weights. ``rnn_weights``: each layer's ``step_weights()``, read
        once outside a loop over steps."""
        rnn_state = state["rnn"]
        if self.attention_kind == "bahdanau":
            # Bahdanau: attend with the previous top state, feed the context into the cell.
            bahdanau_context, weights = self.attention(rnn_state[-1][0], context["keys"], context["memory"],
                                                       context["mask"])
            x = tf.concat([embedded, bahdanau_context], axis=-1)
        elif self.input_feeding:
            x = tf.concat([embedded, state["feed"]], axis=-1)
        else:
            x = embedded
        new_rnn = []
        for i, layer in enumerate(self.rnn_layers):
            x, layer_state = layer.step(x, rnn_state[i], rnn_weights[i] if rnn_weights else None)
            new_rnn.append(layer_state)
            if i + 1 < self.num_layers:
                x = self.dropout(x, training=training)
        if self.attention is None:
            attentional, weights = x, self._no_attention(x, context)
        else:
            if self.attention_kind == "bahdanau":
                attended = bahdanau_context
            else:
                attended, weights = self.attention(x, context["keys"], context["memory"], context["mask"])
            attentional = self.attentional(tf.concat([x, attended], axis=-1))
        new_state: State = {"rnn": tuple(new_rnn)}
        if self.input_feeding:
            new_state["feed"] = attentional
        return attentional, new_state, weights

    def step_embedded(
        self, embedded: tf.Tensor, state: State, context: Context, training: bool, output: OutputRows | None = None
    ) -> tuple[tf.Tensor, State, tf.Tensor]:
        """As :meth:`step`, from the embedded previous token [batch, embedding_dim]: what a gradient
        with respect to the input embeddings is taken through."""
        attentional, new_state, weights = self._recur_embedded(embedded, state, context, training)
        return self._logits(self.dropout(attentional, training=training), output), new_state, weights

    @staticmethod
    def _no_attention(x: tf.Tensor, context: Context) -> tf.Tensor:
        """All-zero weights [batch, (time,) source] (source 0 without an encoder), so that every
        decoder returns weights of the same rank."""
        source = tf.shape(context["mask"])[1] if "mask" in context else 0
        shape = tf.concat([tf.shape(x)[:-1], [source]], axis=0)
        return tf.zeros(shape, tf.float32)

    def step(
        self, ids: tf.Tensor, state: State, context: Context, training: bool = False, output: OutputRows | None = None
    ) -> tuple[tf.Tensor, State, tf.Tensor]:
        """ids [batch] (the previous token) -> logits [batch, vocab] (float32; [batch, n] over the
        tokens of ``output``, from :meth:`output_rows`), new state, attention weights [batch, source]."""
        return self.step_embedded(self.embedding(ids), state, context, training, output)

    # --- whole sentences (teacher forcing) ----------------------------------------------------

    def call(
        self,
        target_in: tf.Tensor,
        state: State,
        context: Context,
        training: bool = False,
        lengths: tf.Tensor | None = None,
        return_state: bool = False,
        project: bool = True,
    ) -> tuple[tf.Tensor, ...]:
        """target_in [batch, time] -> logits [batch, time, vocab], attention [batch, time, source]
        and, with ``return_state``, the state after the last token (after ``lengths[b]`` tokens of
        row b when ``lengths`` is given: the state to continue from, e.g. after a prompt).
        ``project=False``: the vectors the softmax reads [batch, time, units] instead of logits
        (a sampled softmax projects them onto a few tokens itself, see :meth:`output_weights`)."""
        output = self._logits if project else self._softmax_input
        embedded = self.embedding_dropout(self.embedding(target_in), training=training)
        if self.fast_path:
            x = embedded
            final_rnn = []
            for i, layer in enumerate(self.rnn_layers):
                x, layer_final = layer(x, lengths=lengths, initial_state=state["rnn"][i])
                final_rnn.append(layer_final)
                if i + 1 < self.num_layers:
                    x = self.dropout(x, training=training)
            if self.attention is None:
                attentional, weights = x, self._no_attention(x, context)
            else:
                attended, weights = self.attention(x, context["keys"], context["memory"], context["mask"])
                attentional = self.attentional(tf.concat([x, attended], axis=-1))
            outputs = output(self.dropout(attentional, training=training))
            return (outputs, weights, {"rnn": tuple(final_rnn)}) if return_state else (outputs, weights)

        if return_state:
            # Not needed so far: only language models carry state, and they take the fast path.
            raise ValueError("return_state needs the fast path (no input feeding, no bahdanau): "
                             "a language model's decoder")

        if not all(layer.built for layer in self.rnn_layers):
            self._recur_embedded(embedded[:, 0], state, context, training)  # creates the weights
        rnn_weights = [layer.step_weights() for layer in self.rnn_layers]

        def body(carry: tuple[tf.Tensor, State, tf.Tensor], embedded_t: tf.Tensor):
            _, previous, _ = carry
            return self._recur_embedded(embedded_t, previous, context, training, rnn_weights)

        # Only the recurrence loops; the output projection runs once over all steps afterwards
        # (one large matmul, and its weight is not stacked per step for the gradient).
        batch, source = tf.shape(target_in)[0], tf.shape(context["mask"])[1]
        initial = (
            tf.zeros([batch, self.units], self.compute_dtype),
            state,
            tf.zeros([batch, source], tf.float32),  # attention weights are softmaxed in float32
        )
        attentional, _, weights = tf.scan(body, tf.transpose(embedded, [1, 0, 2]), initializer=initial)
        outputs = output(self.dropout(tf.transpose(attentional, [1, 0, 2]), training=training))
        return outputs, tf.transpose(weights, [1, 0, 2])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "cell": self.cell,
            "units": self.units,
            "layers": self.num_layers,
            "attention": self.attention_kind,
            "attention_score": self.attention_score,
            "input_feeding": self.input_feeding,
            "dropout": self.dropout_rate,
            "embedding_dropout": self.embedding_dropout_rate,
            "bridge": self.bridge,
            "tie_embeddings": self.tie_embeddings,
            "output_projection": self.output_projection_dim,
        }
