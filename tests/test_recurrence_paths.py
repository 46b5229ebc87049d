"""The two ways a whole sequence runs (nmt.layers.recurrent): our tf.while_loop and Keras' LSTM /
GRU layers (cuDNN on a GPU) give the same outputs, states and gradients from the same weights, on
padded batches, reversed rows, empty rows (which cuDNN rejects) and empty batches; the choice is
made in one place. On this CPU the Keras path runs Keras' own loop: the layout of the weights, the
masks, the reversal and the empty rows are what is tested; Keras tests its loop against cuDNN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from nmt.layers import recurrent
from nmt.layers.recurrent import Recurrent, forced_recurrence_path, recurrence_path
from nmt.models import Seq2Seq

LENGTHS = [5, 3, 0, 1]


def both_paths(function):
    """``function()`` traced and run on each path: {"loop": ..., "keras": ...}."""
    results = {}
    for path in ("loop", "keras"):
        with forced_recurrence_path(path):
            results[path] = tf.function(function, autograph=False)()
    return results


def assert_close(a, b, atol: float = 1e-5) -> None:
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_both_paths_give_the_same_outputs_states_and_gradients(cell: str, reverse: bool) -> None:
    keras.utils.set_random_seed(1)
    layer = Recurrent(cell, 6)
    x = tf.random.normal([len(LENGTHS), max(LENGTHS), 3])
    lengths = tf.constant(LENGTHS)
    layer(x, lengths)
    # Non-zero biases: a bias put in the wrong slot (or a GRU bias in the wrong row) shows.
    for weight in (layer.bias, getattr(layer, "recurrent_bias", None)):
        if weight is not None:
            weight.assign(tf.random.normal(weight.shape))
    initial = tuple(tf.random.normal([len(LENGTHS), 6]) for _ in range(layer.state_count))

    def run():
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs, final = layer(x, lengths, initial, reverse=reverse)
            loss = tf.reduce_sum(outputs * tf.range(1.0, 7.0)) + sum(tf.reduce_sum(s * s) for s in final)
        return outputs, final, tape.gradient(loss, [x, *layer.trainable_variables])

    results = both_paths(run)
    assert_close(results["loop"], results["keras"])
    outputs, final, _ = results["keras"]
    assert not np.any(outputs.numpy()[1, 3:]) and not np.any(outputs.numpy()[2])  # padding outputs zeros
    assert_close([s[2] for s in final], [s[2] for s in initial], atol=0)  # an empty row keeps its state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_empty_batch_runs_on_both_paths(cell: str) -> None:
    layer = Recurrent(cell, 4)
    results = both_paths(lambda: layer(tf.zeros([2, 0, 3]), tf.constant([0, 0])))
    for outputs, final in results.values():
        assert outputs.shape == (2, 0, 4) and all(not s.numpy().any() for s in final)


@pytest.mark.slow
def test_a_whole_model_trains_alike_on_both_paths() -> None:
    """Bidirectional 2-layer encoder and the decoder's whole-sequence path (no input feeding):
    the same loss and gradients on a padded batch with an empty source row."""
    keras.utils.set_random_seed(2)
    model = Seq2Seq(30, 30, 8, encoder={"cell": "lstm", "units": 8, "layers": 2, "bidirectional": True},
                    decoder={"cell": "gru", "units": 8, "layers": 2, "input_feeding": False})
    model.build_weights()
    assert model.decoder.fast_path
    batch = {"source": tf.constant([[4, 5, 6, 7], [8, 9, 0, 0], [0, 0, 0, 0]]),
             "source_length": tf.constant([4, 2, 0]),
             "target_in": tf.constant([[2, 10, 11], [2, 12, 0], [2, 0, 0]])}

    def run():
        with tf.GradientTape() as tape:
            logits = model(batch, training=False)
            loss = tf.reduce_sum(tf.nn.log_softmax(logits)[..., 5])
        gradients = tape.gradient(loss, model.trainable_variables)
        return logits, [tf.convert_to_tensor(g) for g in gradients]  # embeddings' IndexedSlices

    results = both_paths(run)
    assert_close(results["loop"], results["keras"])


def test_the_path_is_chosen_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = bool(tf.config.list_physical_devices("GPU"))  # the device actually present, asked of TensorFlow
    assert recurrence_path("lstm") == ("keras" if gpu else "loop")
    monkeypatch.setattr(recurrent, "gpu_present", lambda: True)
    assert [recurrence_path(cell) for cell in ("lstm", "gru", "rnn")] == ["keras", "keras", "loop"]
    with forced_recurrence_path("loop"):
        assert recurrence_path("lstm") == "loop"
        with forced_recurrence_path(None):
            assert recurrence_path("gru") == "keras"
    with pytest.raises(ValueError, match="path must be one of"), forced_recurrence_path("cudnn"):
        pass


def test_the_keras_path_adds_no_weights() -> None:
    """The Keras layer reads our variables: the layer's weights (and so its checkpoints) stay ours."""
    layer = Recurrent("gru", 4)
    with forced_recurrence_path("loop"):
        layer(tf.zeros([1, 2, 3]))
    names = [w.path for w in layer.weights]
    with forced_recurrence_path("keras"):
        layer(tf.zeros([1, 2, 3]))
    assert [w.path for w in layer.weights] == names
