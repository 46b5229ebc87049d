"""Sampled softmax (train.sampled_softmax): the loss estimates the full softmax's, is drawn
statelessly from the step, compiles under XLA, trains a model whose full-softmax scores are good, and
bad combinations are errors."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.config import TrainConfig, load_config
from nmt.constants import PAD_ID
from nmt.errors import NmtError
from nmt.losses import log_uniform_draw, sampled_token_loss, token_loss
from nmt.models import LanguageModel, Seq2Seq
from nmt.perplexity import evaluate_perplexity
from nmt.train_stats import LossWindow
from nmt.train_step import make_train_step
from nmt.training import Trainer

from conftest import CYCLE, cycle_text, lm_config

ROOT = Path(__file__).resolve().parent.parent
SEED = tf.constant([7, 3], tf.int32)


def draw(samples: int, vocab: int) -> tf.Tensor:
    return log_uniform_draw(samples, vocab, SEED)


def _case(vocab: int = 50, units: int = 6, rows: int = 3, time: int = 5) -> tuple[tf.Tensor, ...]:
    generator = np.random.default_rng(0)
    features = tf.constant(generator.normal(size=(rows, time, units)), tf.float32)
    weights = tf.constant(generator.normal(size=(vocab, units)), tf.float32)
    bias = tf.constant(generator.normal(size=(vocab,)), tf.float32)
    labels = tf.constant(generator.integers(PAD_ID + 1, vocab, size=(rows, time)), tf.int32)
    return features, labels, weights, bias


def test_with_many_samples_the_loss_is_the_full_softmax_loss() -> None:
    features, labels, weights, bias = _case()
    logits = tf.einsum("btu,vu->btv", features, weights) + bias
    full, tokens = token_loss(logits, labels)
    sampled, sampled_tokens = sampled_token_loss(features, labels, weights, bias, draw(200_000, 50))
    assert float(sampled_tokens) == float(tokens) == 15
    # The importance-weighted sum over the draws estimates the partition function: 1 % here.
    assert float(sampled) == pytest.approx(float(full), rel=0.01)
    # A few samples give an estimate on the same scale, not the same number.
    few, _ = sampled_token_loss(features, labels, weights, bias, draw(8, 50))
    assert float(few) != pytest.approx(float(full), rel=0.01)
    assert 0.0 < float(few) < 3 * float(full)


def test_padding_is_not_scored_and_a_drawn_target_is_masked_out() -> None:
    features, labels, weights, bias = _case(vocab=6)
    padded = tf.concat([labels[:, :3], tf.fill([3, 2], PAD_ID)], axis=1)
    loss, tokens = sampled_token_loss(features, padded, weights, bias, draw(64, 6))
    alone, _ = sampled_token_loss(features[:, :3], labels[:, :3], weights, bias, draw(64, 6))
    assert float(tokens) == 9 and float(loss) == pytest.approx(float(alone), rel=1e-6)
    # 512 draws over 6 ids draw every target too. Unmasked, the target's own logit would stand among
    # the negatives and the loss could not go below log(2); masked, a target far ahead of the other
    # tokens costs almost nothing.
    sharp = tf.one_hot(labels, 6) * 50.0  # with one-hot weight rows, the logits are these features
    loss, _ = sampled_token_loss(sharp, labels, tf.eye(6), tf.zeros([6]), draw(512, 6))
    assert float(loss) < 1e-6


def test_the_draw_is_log_uniform_and_depends_on_the_seed_only() -> None:
    ids = log_uniform_draw(400_000, 50, SEED).numpy()
    assert ids.min() >= 0 and ids.max() <= 49
    expected = np.log((np.arange(50) + 2) / (np.arange(50) + 1)) / np.log(51)
    np.testing.assert_allclose(np.bincount(ids, minlength=50) / len(ids), expected, atol=0.002)
    first, again, other = (log_uniform_draw(16, 50, tf.constant(seed)).numpy() for seed in ([1, 5], [1, 5], [1, 6]))
    assert (first == again).all() and (first != other).any()


def test_the_loss_compiles_under_xla_to_the_same_value() -> None:
    features, labels, weights, bias = _case()
    drawn = draw(32, 50)
    eager, _ = sampled_token_loss(features, labels, weights, bias, drawn)
    compiled = tf.function(lambda f: sampled_token_loss(f, labels, weights, bias, drawn)[0], jit_compile=True)
    assert float(compiled(features)) == pytest.approx(float(eager), rel=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_output_weights_are_the_projection_the_logits_use(tie: bool) -> None:
    model = Seq2Seq(source_vocab_size=30, target_vocab_size=40, embedding_dim=8, tie_embeddings=tie,
                    encoder={"cell": "gru", "units": 8}, decoder={"cell": "gru", "units": 8, "dropout": 0.0})
    batch = {"source": tf.constant([[4, 5, 6]]), "source_length": tf.constant([3]),
             "target_in": tf.constant([[2, 7, 9]])}
    logits = model(batch)
    features = model(batch, project=False)
    weights, bias = model.decoder.output_weights()
    assert tuple(features.shape) == (1, 3, 8) and tuple(weights.shape) == (40, 8)
    np.testing.assert_allclose(tf.einsum("btu,vu->btv", features, weights) + bias, logits, atol=1e-5)
    lm = LanguageModel(vocab_size=40, embedding_dim=8, decoder={"cell": "lstm", "units": 8}, tie_embeddings=tie)
    ids = tf.constant([[2, 7, 9]])
    lm_logits, _ = lm.forward(ids, lm.initial_state(1))
    lm_features, _ = lm.forward(ids, lm.initial_state(1), project=False)
    weights, bias = lm.decoder.output_weights()
    np.testing.assert_allclose(tf.einsum("btu,vu->btv", lm_features, weights) + bias, lm_logits, atol=1e-5)


@pytest.mark.slow
def test_each_training_step_scores_against_its_own_draw() -> None:
    # Bahdanau attention: the decoder's step-by-step path (tf.scan), not the fused one.
    model = Seq2Seq(12, 12, embedding_dim=8, encoder={"cell": "gru", "units": 8, "dropout": 0.0},
                    decoder={"cell": "lstm", "units": 8, "attention": "bahdanau", "dropout": 0.0})
    model.build_weights()
    rng = np.random.default_rng(0)
    batch = {"source": tf.constant(rng.integers(4, 12, [4, 6]), tf.int32), "source_length": tf.constant([6, 5, 3, 6]),
             "target_in": tf.constant(rng.integers(4, 12, [4, 5]), tf.int32),
             "target_out": tf.constant(rng.integers(4, 12, [4, 5]), tf.int32)}
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    step = make_train_step(tf.distribute.get_strategy(), model, optimizer, TrainConfig(sampled_softmax=5), {},
                           LossWindow(), seed=2**31 + 9)
    draws = []
    for number in range(2):
        drawn = log_uniform_draw(5, 12, tf.constant([9, number]))  # the seed modulo 2**31, the step
        expected, _ = sampled_token_loss(model(batch, project=False), batch["target_out"],
                                         *model.decoder.output_weights(), drawn)
        full, _ = token_loss(model(batch), batch["target_out"])
        loss, _, tokens, _ = step(batch)
        assert float(tokens) == 20 and float(loss) == pytest.approx(float(expected), rel=1e-5)
        assert float(loss) != pytest.approx(float(full), rel=1e-3)
        draws.append(drawn.numpy())
    assert (draws[0] != draws[1]).any()


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_a_language_model_trained_with_sampled_softmax_learns(tmp_path: Path, jit: bool) -> None:
    extra = {"train.sampled_softmax": 4, "train.jit_compile": jit}
    Trainer(load_config(lm_config(tmp_path, "cycle", cycle_text(300), extra))).train()
    lm = nmt.load(tmp_path / "cycle")
    # Trained on 4 sampled tokens a step, scored with the full softmax over the 12 ids: learnt.
    assert evaluate_perplexity(lm, [" ".join(CYCLE)] * 10).word_perplexity < 1.3
    assert lm.next_words("north east south", k=1)[0][0] == "west"


@pytest.mark.slow
def test_an_interrupted_run_draws_what_an_uninterrupted_one_draws(tmp_path: Path) -> None:
    extra = {"train.sampled_softmax": 4, "train.steps": 20, "train.checkpoint_every": 10}
    Trainer(load_config(lm_config(tmp_path, "straight", cycle_text(50), extra))).train()
    halves = lm_config(tmp_path, "halves", cycle_text(50), extra)
    Trainer(load_config(halves, ["train.steps=10"])).train()
    Trainer(load_config(halves)).train()
    a, b = nmt.load(tmp_path / "straight", weights="latest"), nmt.load(tmp_path / "halves", weights="latest")
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def test_samples_must_be_fewer_than_the_trained_vocabulary(tmp_path: Path) -> None:
    # tokenizer.vocab_size is an upper bound: 20 asked, 12 ids trained on this text.
    config = load_config(lm_config(tmp_path, "small", cycle_text(30), {"train.sampled_softmax": 15}))
    with pytest.raises(NmtError, match="train.sampled_softmax: 15 samples is not fewer than the 12 tokens of the "
                                       "trained vocabulary"):
        Trainer(config).train()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.sampled_softmax=512"], "train.sampled_softmax: smoothing needs the whole vocabulary"),
        (["train.label_smoothing=0", "train.sampled_softmax=8000"],
         "train.sampled_softmax: 8000 samples is not fewer than the 8000 tokens of tokenizer.vocab_size"),
        (["train.sampled_softmax=0"], "train.sampled_softmax: must be positive"),
    ],
)
def test_sampled_softmax_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(NmtError, match=message):
        load_config(ROOT / "configs" / "en-ja.yaml", overrides)
