"""Training behaviour: a tiny model learns a task, resume continues exactly, loss and schedule."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.config import load_config
from nmt.errors import NmtError
from nmt.losses import token_loss
from nmt.schedule import LearningRate
from nmt.training import Trainer

from conftest import write_config

LETTERS = "abcdefghij"


def write_reverse_task(folder: Path, count: int, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    sources, targets = [], []
    for _ in range(count):
        words = [rng.choice(LETTERS) for _ in range(rng.randint(3, 7))]
        sources.append(" ".join(words))
        targets.append(" ".join(reversed(words)))
    source, target = folder / f"{seed}.src", folder / f"{seed}.tgt"
    source.write_text("\n".join(sources) + "\n", encoding="utf-8")
    target.write_text("\n".join(targets) + "\n", encoding="utf-8")
    return source, target


def task_config(tmp_path: Path, run_dir: Path, steps: int, extra: dict | None = None) -> Path:
    source, target = write_reverse_task(tmp_path, 2000, seed=1)
    tree = {
        "run_dir": str(run_dir),
        "data": {
            "train": {"format": "parallel", "source_path": str(source), "target_path": str(target)},
            "source_language": "xx",
            "target_language": "xx",
            "max_source_length": 10,
            "max_target_length": 10,
        },
        "tokenizer": {"model_type": "word", "vocab_size": 20, "character_coverage": 1.0},
        "model": {
            "embedding_dim": 32,
            "encoder": {"cell": "gru", "units": 48, "bidirectional": True, "dropout": 0.0},
            "decoder": {"cell": "gru", "units": 48, "dropout": 0.0},
        },
        "train": {"steps": steps, "batch_size": 32, "learning_rate": 0.01, "eval_every": 10**6,
                  "checkpoint_every": 10, "bucket_width": 2},
        "decode": {"beam_size": 1},
    }
    return write_config(tree, tmp_path / f"{run_dir.name}.yaml", extra)


@pytest.mark.slow
def test_tiny_model_learns_to_reverse_sequences(tmp_path: Path) -> None:
    run_dir = tmp_path / "reverse"
    # The rate decays to its floor by the last step, so the weights tested are settled ones: at a constant
    # 0.01 the last steps can land on a loss spike (0.026 at step 300, 0.26 at 400, 0.8 exact, on an
    # AVX-512 machine whose kernels round differently), at cosine decay 1.0 exact on unseen sequences.
    Trainer(load_config(task_config(tmp_path, run_dir, steps=400, extra={"train.decay": "cosine"}))).train()
    source, target = write_reverse_task(tmp_path, 100, seed=99)  # unseen sequences
    sources = source.read_text(encoding="utf-8").splitlines()
    targets = target.read_text(encoding="utf-8").splitlines()
    translator = nmt.load(run_dir)
    outputs = [h[0].text for h in translator.translate(sources, beam_size=1)]
    accuracy = np.mean([o == t for o, t in zip(outputs, targets)])
    assert accuracy >= 0.9, list(zip(sources, outputs))[:5]
    beam = [h[0].text for h in translator.translate(sources, beam_size=4)]
    assert np.mean([o == t for o, t in zip(beam, targets)]) >= 0.9


def final_weights(run_dir: Path) -> list[np.ndarray]:
    return [v.numpy() for v in nmt.load(run_dir, weights="latest").model.weights]


@pytest.mark.slow
def test_interrupted_run_resumes_at_saved_step_with_same_state(tmp_path: Path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    # Dropout on: the dropout random state must be resumed too, not only weights and optimizer.
    extra = {"model.encoder.dropout": 0.3, "model.decoder.dropout": 0.3}
    Trainer(load_config(task_config(tmp_path, straight, steps=20, extra=extra))).train()
    # "Interrupt" after step 10 (the last checkpoint), then run the same command again.
    Trainer(load_config(task_config(tmp_path, interrupted, steps=10, extra=extra))).train()
    assert tf.train.latest_checkpoint(interrupted / "checkpoints").endswith("ckpt-10")
    Trainer(load_config(task_config(tmp_path, interrupted, steps=20, extra=extra))).train()
    assert tf.train.latest_checkpoint(interrupted / "checkpoints").endswith("ckpt-20")
    # Same step count, optimizer moments and data position: the weights come out the same.
    for a, b in zip(final_weights(straight), final_weights(interrupted)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # A kept checkpoint can be loaded by name: ckpt-20 is the latest, ckpt-10 the weights before.
    named = [v.numpy() for v in nmt.load(interrupted, weights="ckpt-20").model.weights]
    for a, b in zip(final_weights(interrupted), named):
        np.testing.assert_array_equal(a, b)
    earlier = [v.numpy() for v in nmt.load(interrupted, weights="ckpt-10").model.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(named, earlier))
    with pytest.raises(NmtError, match=r"no checkpoint ckpt-15 \(kept: ckpt-10, ckpt-20\)"):
        nmt.load(interrupted, weights="ckpt-15")
    with pytest.raises(NmtError, match=r"weights 'newest': expected best, latest, averaged or a checkpoint name"):
        nmt.load(interrupted, weights="newest")


@pytest.mark.slow
def test_resuming_with_another_model_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(load_config(task_config(tmp_path, run_dir, steps=10))).train()
    changed = load_config(task_config(tmp_path, run_dir, steps=20, extra={"model.encoder.units": 64}))
    with pytest.raises(NmtError, match=r"model\.encoder.*48.*64"):
        Trainer(changed).train()


def test_token_loss_ignores_padding_and_smoothing_of_uniform_logits() -> None:
    vocab = 7
    logits = tf.zeros([2, 3, vocab])
    labels = tf.constant([[4, 5, 0], [6, 0, 0]])
    loss, tokens = token_loss(logits, labels)
    assert float(tokens) == 3.0
    np.testing.assert_allclose(float(loss), np.log(vocab), rtol=1e-6)
    smoothed, _ = token_loss(logits, labels, label_smoothing=0.1)
    np.testing.assert_allclose(float(smoothed), np.log(vocab), rtol=1e-6)
    # A confident correct prediction costs less than a confident wrong one.
    good = tf.one_hot(labels, vocab) * 10.0
    assert float(token_loss(good, labels)[0]) < 0.01


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_token_loss_and_its_gradient_are_the_smoothed_cross_entropy(label_smoothing: float) -> None:
    """The fused kernel with smoothing folded into its gradient gives the textbook loss,
    (1 - s) * NLL + s * the mean NLL over the vocabulary per target token, and its gradient."""
    rng = np.random.default_rng(3)
    logits = tf.Variable(rng.normal(size=(3, 5, 11)).astype(np.float32) * 4.0)
    labels = tf.constant(rng.integers(1, 11, size=(3, 5)) * (rng.random((3, 5)) > 0.3), tf.int32)

    def textbook() -> tf.Tensor:
        log_probs = tf.nn.log_softmax(logits)
        nll = -tf.gather(log_probs, labels, batch_dims=2)
        smoothed = (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(log_probs, axis=-1)
        mask = tf.cast(labels != 0, tf.float32)
        return tf.reduce_sum(smoothed * mask) / tf.reduce_sum(mask)

    with tf.GradientTape(persistent=True) as tape:
        loss, tokens = token_loss(logits, labels, label_smoothing)
        want = textbook()
    assert float(tokens) == float(np.count_nonzero(labels.numpy()))
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), tape.gradient(want, logits).numpy(), atol=1e-7)


def test_learning_rate_warms_up_and_decays() -> None:
    schedule = LearningRate(peak=1.0, warmup=10, decay="cosine", total=110)
    rates = [float(schedule(step)) for step in (0, 4, 9, 60, 109)]
    np.testing.assert_allclose(rates[:3], [0.1, 0.5, 1.0], rtol=1e-6)
    assert 0.1 < rates[3] < 1.0
    np.testing.assert_allclose(rates[4], 0.1, rtol=1e-3)
