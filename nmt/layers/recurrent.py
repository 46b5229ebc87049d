"""A recurrent layer (vanilla RNN, GRU, LSTM, CIFG) that runs a whole padded sequence or one step.

Why our own and not ``keras.layers.LSTM``: the input projection of every time step is computed as
one large matmul before the loop (the loop then only multiplies the hidden state), padding is
masked per example, and the very same weights serve :meth:`step`, which the decoders and the
decoding module drive one token at a time. Runs on the TensorFlow backend.

A whole sequence (:meth:`Recurrent.call`: the encoder, and the decoder without input feeding) runs
one of two ways, chosen in one place, :func:`recurrence_path`:

- ``"loop"``: our ``tf.while_loop``, on every device; the CPU default (faster there than Keras'
  loop: bench/README.md, "GPU");
- ``"keras"``: Keras 3's ``LSTM`` / ``GRU`` layers reading our weights, which on a GPU run cuDNN's
  fused kernel (``CudnnRNNV3``): the default where a GPU is present. Our LSTM is Keras' (gates
  i, f, g, o, one bias) and our GRU is Keras' ``reset_after`` GRU (the reset gate multiplies the
  recurrent matmul plus its own bias), so the same weights give the same numbers. The vanilla
  ``rnn`` cell has no cuDNN path in Keras and always loops, and so does ``cifg``: cuDNN's LSTM
  kernel computes its four gates independently and has no coupled input gate (on a GPU a CIFG
  model trains on our loop, slower than cuDNN's LSTM but with 3/4 of its weights).

``cifg`` is the LSTM with coupled input and forget gates (Greff et al. 2017, "LSTM: A Search Space
Odyssey"; the cell of Gboard's language model, Hard et al. 2018): gates f, g, o, one bias, and the
input gate is 1 - f, so a cell forgets exactly as much as it writes.

A graph traced on the Keras path on a GPU holds CudnnRNN ops that no CPU can run: the export
traces under ``forced_recurrence_path("loop")``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

CELLS = ("rnn", "gru", "lstm", "cifg")
CELL_STATES = {"rnn": 1, "gru": 1, "lstm": 2, "cifg": 2}  # (h,) or (h, c)
RECURRENCE_PATHS = ("loop", "keras")
FUSED_CELLS = ("gru", "lstm")  # the cells Keras runs on cuDNN with our math
_forced_path: str | None = None


def gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def recurrence_path(cell: str) -> str:
    """How :meth:`Recurrent.call` runs a whole sequence of ``cell``: "keras" (cuDNN's fused kernel
    on a GPU) where a GPU is present and the cell has a fused kernel, "loop" otherwise, unless
    :func:`forced_recurrence_path` says otherwise. Read when a graph is traced."""
    path = _forced_path or ("keras" if gpu_present() else "loop")
    return path if cell in FUSED_CELLS else "loop"


@contextlib.contextmanager
def forced_recurrence_path(path: str | None) -> Iterator[None]:
    """Within the block, graphs traced run whole sequences on ``path`` ("loop" or "keras"; None:
    the default of :func:`recurrence_path`): for the export (always "loop", CPU-servable), the
    tests and the benchmarks. Process-wide, not per thread: tracing may happen on any thread."""
    global _forced_path
    if path not in (None, *RECURRENCE_PATHS):
        raise ValueError(f"path must be one of {RECURRENCE_PATHS} or None, got {path!r}")
    previous, _forced_path = _forced_path, path
    try:
        yield
    finally:
        _forced_path = previous


def matmul_last(x: tf.Tensor, w: tf.Tensor, transpose_w: bool = False) -> tf.Tensor:
    """x [..., i] @ w [i, j] (or w [j, i] transposed) as one 2-D matmul: tf.einsum's gradient here
    is ~40x slower on CPU, and a broadcasting 3-D tf.matmul's ~3x."""
    if x.shape.rank == 2:
        return tf.matmul(x, w, transpose_b=transpose_w)
    shape = tf.shape(x)
    out = tf.matmul(tf.reshape(x, [-1, shape[-1]]), w, transpose_b=transpose_w)
    columns = tf.shape(w)[:1] if transpose_w else tf.shape(w)[-1:]
    return tf.reshape(out, tf.concat([shape[:-1], columns], axis=0))
_GATES = {"rnn": 1, "gru": 3, "lstm": 4, "cifg": 3}


class _Untracked:
    """Holds an object out of Keras' and TensorFlow's tracking: not a sub-layer, no weights, no
    checkpoint entry."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Recurrent(keras.layers.Layer):
    """One unidirectional recurrent layer.

    State is a tuple: ``(h,)`` for ``rnn`` and ``gru``, ``(h, c)`` for ``lstm`` and ``cifg``.

    Example:
    >>> layer = Recurrent("gru", 8)
    >>> outputs, state = layer(tf.zeros([2, 5, 3]), tf.constant([5, 2]))
    >>> tuple(outputs.shape), len(state)
    ((2, 5, 8), 1)
    """

    def __init__(self, cell: str = "lstm", units: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell = cell
        self.units = units
        self._keras_layer: _Untracked | None = None  # made on the first run on the Keras path

    @property
    def state_count(self) -> int:
        return CELL_STATES[self.cell]

    def build(self, input_shape: Any) -> None:
        gates = _GATES[self.cell] * self.units
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), gates), initializer="glorot_uniform", name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, gates), initializer="orthogonal", name="recurrent_kernel"
        )
        if self.cell in ("lstm", "cifg"):
            # Forget-gate bias 1: remember by default early in training (Jozefowicz et al. 2015).
            # The gates' order: i, f, g, o (Keras' LSTM) or f, g, o (cifg).
            def bias_init(shape: Any, dtype: Any = None) -> Any:
                u = self.units
                before, after = (1, 2) if self.cell == "lstm" else (0, 2)
                return keras.ops.concatenate(
                    [keras.ops.zeros([before * u]), keras.ops.ones([u]), keras.ops.zeros([after * u])]
                )

            self.bias = self.add_weight(shape=(gates,), initializer=bias_init, name="bias")
        else:
            self.bias = self.add_weight(shape=(gates,), initializer="zeros", name="bias")
        if self.cell == "gru":
            # GRU with the reset gate applied after the recurrent matmul (cuDNN/Keras variant).
            self.recurrent_bias = self.add_weight(shape=(gates,), initializer="zeros", name="recurrent_bias")
        self.built = True

    def initial_state(self, batch_size: tf.Tensor) -> tuple[tf.Tensor, ...]:
        zeros = tf.zeros([batch_size, self.units], dtype=self.compute_dtype)
        return tuple(zeros for _ in range(self.state_count))

    def project(self, inputs: tf.Tensor) -> tf.Tensor:
        """The input part of every gate: one matmul for all positions. The weights are cast: a
        decoder's step() calls this directly, outside the Keras __call__ that autocasts them
        under mixed precision."""
        dtype = self.compute_dtype
        return matmul_last(tf.cast(inputs, dtype), tf.cast(self.kernel, dtype)) + tf.cast(self.bias, dtype)

    def recur(
        self, projected: tf.Tensor, state: tuple[tf.Tensor, ...], weights: tuple[tf.Tensor, ...] | None = None
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """One step from the projected input [batch, gates] and the previous state. ``weights``:
        the recurrent weights read once outside a loop (:meth:`recurrent_weights`)."""
        kernel, bias = weights if weights is not None else self.recurrent_weights()
        h = state[0]
        if self.cell == "lstm":
            z = projected + tf.matmul(h, kernel)
            i, f, g, o = tf.split(z, 4, axis=-1)
            c = tf.sigmoid(f) * state[1] + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, (h, c)
        if self.cell == "cifg":
            z = projected + tf.matmul(h, kernel)
            f, g, o = tf.split(z, 3, axis=-1)
            forget = tf.sigmoid(f)
            c = forget * state[1] + (1.0 - forget) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return h, (h, c)
        if self.cell == "gru":
            recurrent = tf.matmul(h, kernel) + bias
            x_z, x_r, x_h = tf.split(projected, 3, axis=-1)
            h_z, h_r, h_h = tf.split(recurrent, 3, axis=-1)
            z = tf.sigmoid(x_z + h_z)
            r = tf.sigmoid(x_r + h_r)
            candidate = tf.tanh(x_h + r * h_h)
            h = z * h + (1.0 - z) * candidate
            return h, (h,)
        h = tf.tanh(projected + tf.matmul(h, kernel))
        return h, (h,)

    def recurrent_weights(self) -> tuple[tf.Tensor, tf.Tensor | None]:
        """The recurrent kernel (and GRU bias) as tensors in the compute dtype. Read once before a
        time loop: a variable read inside the loop is stacked once per step for the gradient
        (and XLA cannot compile that)."""
        kernel = tf.cast(self.recurrent_kernel, self.compute_dtype)
        bias = tf.cast(self.recurrent_bias, self.compute_dtype) if self.cell == "gru" else None
        return kernel, bias

    def step_weights(self) -> tuple[tf.Tensor, ...]:
        """Every weight :meth:`step` uses, read as tensors: a loop over steps reads them once."""
        dtype = self.compute_dtype
        return (tf.cast(self.kernel, dtype), tf.cast(self.bias, dtype), *self.recurrent_weights())

    def step(
        self, inputs: tf.Tensor, state: tuple[tf.Tensor, ...], weights: tuple[tf.Tensor, ...] | None = None
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """One time step: inputs [batch, features] -> (output [batch, units], new state).
        ``weights``: from :meth:`step_weights`, when called in a loop."""
        if not self.built:  # step() is called directly, not through __call__, by the decoders
            self.build(inputs.shape)
        if weights is None:
            return self.recur(self.project(inputs), state)
        kernel, bias, *recurrent = weights
        return self.recur(matmul_last(tf.cast(inputs, kernel.dtype), kernel) + bias, state, tuple(recurrent))

    def call(
        self,
        inputs: tf.Tensor,
        lengths: tf.Tensor | None = None,
        initial_state: tuple[tf.Tensor, ...] | None = None,
        reverse: bool = False,
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """Runs [batch, time, features] -> (outputs [batch, time, units], final state).

        With ``lengths``, positions at or past an example's length leave its state unchanged and
        output zeros, so the final state is the state after the last real token. ``reverse`` reads
        each sequence backwards within its own length (the backward half of a bidirectional layer).
        """
        inputs = tf.cast(inputs, self.compute_dtype)
        batch, time = tf.shape(inputs)[0], tf.shape(inputs)[1]
        if lengths is None:
            lengths = tf.fill([batch], time)
        if reverse:
            inputs = tf.reverse_sequence(inputs, lengths, seq_axis=1, batch_axis=0)
        state = tuple(tf.cast(s, self.compute_dtype) for s in initial_state) if initial_state is not None \
            else self.initial_state(batch)
        if recurrence_path(self.cell) == "keras":
            outputs, final = self._keras_sequence(inputs, lengths, state)
        else:
            outputs, final = self._loop_sequence(inputs, lengths, state)
        if reverse:
            outputs = tf.reverse_sequence(outputs, lengths, seq_axis=1, batch_axis=0)
        return outputs, final

    def _loop_sequence(
        self, inputs: tf.Tensor, lengths: tf.Tensor, state: tuple[tf.Tensor, ...]
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """:meth:`call` on our ``tf.while_loop`` (any cell, any device)."""
        time = tf.shape(inputs)[1]
        # Time-major TensorArrays in a while loop (as Keras' own RNN does): its gradient is far
        # cheaper than tf.scan's here.
        projected = tf.TensorArray(self.compute_dtype, size=time).unstack(tf.transpose(self.project(inputs), [1, 0, 2]))
        mask = tf.TensorArray(tf.bool, size=time).unstack(tf.transpose(tf.sequence_mask(lengths, time))[:, :, None])
        outputs = tf.TensorArray(self.compute_dtype, size=time)
        weights = self.recurrent_weights()

        def body(t: tf.Tensor, state: tuple[tf.Tensor, ...], outputs: tf.TensorArray):
            m_t = mask.read(t)
            h, new_state = self.recur(projected.read(t), state, weights)
            new_state = tuple(tf.where(m_t, n, p) for n, p in zip(new_state, state))
            return t + 1, new_state, outputs.write(t, tf.where(m_t, h, tf.zeros_like(h)))

        _, final, outputs = tf.while_loop(
            lambda t, *_: t < time, body, (tf.constant(0), state, outputs), maximum_iterations=time
        )
        return tf.transpose(outputs.stack(), [1, 0, 2]), final

    def _keras_sequence(
        self, inputs: tf.Tensor, lengths: tf.Tensor, state: tuple[tf.Tensor, ...]
    ) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        """:meth:`call` through Keras' LSTM / GRU layer (cuDNN on a GPU), on our weights.

        cuDNN rejects a sequence of length 0 (and Keras asserts against it), so every row runs at
        least one step (an empty batch gets one padding step): the outputs past each row's length
        are zeroed and the empty rows keep their initial state afterwards, as on the loop path.
        """
        dtype = self.compute_dtype
        time = tf.shape(inputs)[1]
        steps = tf.maximum(time, 1)
        padded = tf.pad(inputs, [[0, 0], [0, steps - time], [0, 0]])
        if self._keras_layer is None:
            # Keras' default activations, no recurrent dropout, no unrolling, a bias and (GRU)
            # reset_after: the conditions under which it picks cuDNN. Made once, outside any traced
            # function: its cell makes a (dropout) seed variable.
            layer_class = keras.layers.LSTM if self.cell == "lstm" else keras.layers.GRU
            with tf.init_scope():
                self._keras_layer = _Untracked(layer_class(
                    self.units, return_sequences=True, return_state=True, dtype=self.dtype_policy,
                    name=f"{self.name}_keras"))
        layer = self._keras_layer.value
        # The weights stay ours (and the checkpoints' layout with them): the Keras layer reads them
        # as tensors instead of building variables of its own.
        bias = tf.cast(self.bias, dtype)
        if self.cell == "gru":  # Keras keeps both GRU biases in one [2, gates] weight
            bias = tf.stack([bias, tf.cast(self.recurrent_bias, dtype)])
        cell = layer.cell
        cell.kernel, cell.recurrent_kernel, cell.bias = tf.cast(self.kernel, dtype), \
            tf.cast(self.recurrent_kernel, dtype), bias
        cell.built = layer.built = True
        try:
            outputs, *final = layer(padded, initial_state=list(state),
                                    mask=tf.sequence_mask(tf.maximum(lengths, 1), steps))
        finally:  # the layer outlives this graph: keep none of its tensors
            cell.kernel = cell.recurrent_kernel = cell.bias = None
        outputs = tf.where(tf.sequence_mask(lengths, time)[:, :, None], outputs[:, :time], tf.zeros([], dtype))
        empty = tf.equal(lengths, 0)[:, None]
        return outputs, tuple(tf.where(empty, before, after) for before, after in zip(state, final))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cell": self.cell, "units": self.units}
