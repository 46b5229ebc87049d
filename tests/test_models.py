"""Model behaviour: padding invariance, step() == teacher forcing, attention, saving round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from nmt.layers import Attention, Encoder, Recurrent
from nmt.models import Seq2Seq

DECODERS = [
    {"cell": "lstm", "units": 16, "attention": "luong", "attention_score": "general"},
    {"cell": "gru", "units": 16, "attention": "bahdanau"},
    {"cell": "rnn", "units": 16, "attention": "luong", "attention_score": "dot", "input_feeding": True, "layers": 2},
]
ENCODERS = [
    {"cell": "lstm", "units": 8, "layers": 2, "bidirectional": True},
    {"cell": "gru", "units": 16, "layers": 1, "bidirectional": False},
    {"cell": "rnn", "units": 8, "layers": 1, "bidirectional": True},
]


def make_model(encoder: dict, decoder: dict, **kwargs) -> Seq2Seq:
    tf.random.set_seed(0)
    model = Seq2Seq(30, 40, embedding_dim=16, encoder=encoder, decoder=decoder, **kwargs)
    model.build_weights()
    return model


BATCH = {
    "source": tf.constant([[4, 5, 6, 7], [8, 9, 0, 0]]),
    "source_length": tf.constant([4, 2]),
    "target_in": tf.constant([[2, 7, 9, 11], [2, 5, 0, 0]]),
}


@pytest.mark.parametrize("encoder,decoder", list(zip(ENCODERS, DECODERS)))
def test_padding_does_not_change_outputs(encoder: dict, decoder: dict) -> None:
    model = make_model(encoder, decoder)
    batched = model(BATCH).numpy()
    alone = model({"source": tf.constant([[8, 9]]), "source_length": tf.constant([2]),
                   "target_in": tf.constant([[2, 5]])}).numpy()
    np.testing.assert_allclose(batched[1, :2], alone[0], atol=1e-5)
    # Extra padding on the first sentence changes nothing either.
    padded = dict(BATCH, source=tf.pad(BATCH["source"], [[0, 0], [0, 3]]))
    np.testing.assert_allclose(model(padded).numpy(), batched, atol=1e-5)


@pytest.mark.parametrize("decoder", DECODERS)
def test_step_matches_teacher_forcing(decoder: dict) -> None:
    model = make_model(ENCODERS[0], decoder)
    logits = model(BATCH).numpy()
    context, state = model.encode(BATCH["source"], BATCH["source_length"])
    stepped = []
    for t in range(4):
        step_logits, state, _ = model.step(BATCH["target_in"][:, t], state, context)
        stepped.append(step_logits.numpy())
    np.testing.assert_allclose(np.stack(stepped, axis=1), logits, atol=1e-5)


@pytest.mark.parametrize("kind,score", [("luong", "general"), ("luong", "dot"), ("bahdanau", "dot")])
def test_attention_weights_sum_to_one_over_unpadded_source(kind: str, score: str) -> None:
    attention = Attention(kind, score)
    memory = tf.random.normal([2, 5, 8])
    mask = tf.sequence_mask([5, 3], 5)
    keys = attention.keys(memory, query_dim=8)
    context, weights = attention(tf.random.normal([2, 4, 8]), keys, memory, mask)
    assert context.shape == (2, 4, 8) and weights.shape == (2, 4, 5)
    np.testing.assert_allclose(tf.reduce_sum(weights, -1).numpy(), np.ones([2, 4]), atol=1e-6)
    assert float(tf.reduce_max(weights[1, :, 3:])) == 0.0


def test_recurrent_reverse_reads_each_sequence_backwards_within_its_length() -> None:
    layer = Recurrent("gru", 4)
    x = tf.random.normal([1, 3, 2])
    padded = tf.concat([x, tf.random.normal([1, 2, 2])], axis=1)
    out_padded, final_padded = layer(padded, tf.constant([3]), reverse=True)
    out_alone, final_alone = layer(tf.reverse(x, [1]))
    np.testing.assert_allclose(out_padded[0, :3].numpy(), out_alone[0, ::-1].numpy(), atol=1e-6)
    np.testing.assert_allclose(final_padded[0].numpy(), final_alone[0].numpy(), atol=1e-6)
    assert float(tf.reduce_max(tf.abs(out_padded[0, 3:]))) == 0.0


def test_encoder_shapes() -> None:
    encoder = Encoder(50, 8, cell="lstm", units=6, layers=2, bidirectional=True)
    memory, final = encoder(tf.constant([[5, 6, 7], [8, 0, 0]]), tf.constant([3, 1]))
    assert memory.shape == (2, 3, 12) and final.shape == (2, 24)


def test_embedding_dropout_is_separate_from_layer_dropout() -> None:
    """A one-layer encoder drops only its embeddings: with embedding_dropout 0 training is
    deterministic even at dropout 0.9; unset, the embeddings get the layer dropout."""
    ids, lengths = tf.constant([[5, 6, 7, 8]]), tf.constant([4])
    kept = Encoder(vocab_size=20, embedding_dim=8, cell="gru", units=8, dropout=0.9, embedding_dropout=0.0)
    np.testing.assert_array_equal(kept(ids, lengths, training=True)[0], kept(ids, lengths, training=True)[0])
    np.testing.assert_array_equal(kept(ids, lengths, training=True)[0], kept(ids, lengths, training=False)[0])
    dropped = Encoder(vocab_size=20, embedding_dim=8, cell="gru", units=8, dropout=0.9)
    assert not np.array_equal(dropped(ids, lengths, training=True)[0], dropped(ids, lengths, training=False)[0])
    assert Encoder.from_config(kept.get_config()).embedding_dropout_rate == 0.0


def test_tied_embeddings_share_the_matrix() -> None:
    model = make_model(ENCODERS[1], {"cell": "gru", "units": 16}, tie_embeddings=True)
    names = [v.path for v in model.trainable_variables]
    assert not any("output_projection" in n for n in names)
    untied = make_model(ENCODERS[1], {"cell": "gru", "units": 16})
    assert len(untied.trainable_variables) == len(model.trainable_variables) + 1  # kernel of the projection


def test_config_and_weights_round_trip(tmp_path) -> None:
    model = make_model(ENCODERS[0], DECODERS[1])
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    clone = Seq2Seq.from_config(model.get_config())
    clone.build_weights()
    clone.load_weights(path)
    np.testing.assert_allclose(clone(BATCH).numpy(), model(BATCH).numpy(), atol=1e-6)
