"""Gradient statistics during training: the global norm before clipping, the fraction of clipped
steps and per-layer norms, in the compiled step, TensorBoard, metrics.jsonl and `nmt report`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import nmt.training_state
from nmt.cli import main
from nmt.config import TrainConfig, load_config
from nmt.losses import token_loss
from nmt.models import Seq2Seq
from nmt.train_stats import GradientWindow, LossWindow, gradient_groups
from nmt.train_step import make_train_step
from nmt.training import Trainer
from nmt.visualize import read_scalar

from test_training import task_config

# The reverse task's model (test_training.task_config): bidirectional GRU encoder, Luong attention.
GROUPS = ["encoder/embedding", "encoder/forward_0", "encoder/backward_0", "decoder/embedding", "decoder/rnn_0",
          "attention", "decoder/attentional", "bridge", "decoder/output_projection"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def tiny_model() -> Seq2Seq:
    model = Seq2Seq(12, 12, embedding_dim=8,
                    encoder={"cell": "lstm", "units": 8, "layers": 2, "bidirectional": True, "dropout": 0.0},
                    decoder={"cell": "gru", "units": 8, "layers": 2, "attention": "bahdanau", "dropout": 0.0})
    model.build_weights()
    return model


@pytest.mark.slow
def test_layer_norms_are_the_pre_clipping_norms_and_add_up_to_the_global_norm() -> None:
    model = tiny_model()
    groups = gradient_groups(model.trainable_variables)
    assert list(groups) == ["encoder/embedding", "encoder/forward_0", "encoder/forward_1", "encoder/backward_0",
                            "encoder/backward_1", "decoder/embedding", "decoder/rnn_0", "decoder/rnn_1", "attention",
                            "decoder/attentional", "bridge", "decoder/output_projection"]
    assert sorted(i for group in groups.values() for i in group) == list(range(len(model.trainable_variables)))
    assert list(gradient_groups(tiny_model().trainable_variables)) == list(groups)  # not the model's own name

    rng = np.random.default_rng(0)
    batch = {"source": tf.constant(rng.integers(3, 12, [4, 6]), tf.int32), "source_length": tf.constant([6, 5, 3, 6]),
             "target_in": tf.constant(rng.integers(3, 12, [4, 5]), tf.int32),
             "target_out": tf.constant(rng.integers(3, 12, [4, 5]), tf.int32)}
    with tf.GradientTape() as tape:  # the gradients the step will see, before it changes the weights
        loss, _ = token_loss(model(batch, training=True), batch["target_out"])
    expected = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    cfg = TrainConfig(clip_norm=1e-3)
    window = GradientWindow(len(groups))
    step = make_train_step(tf.distribute.get_strategy(), model, optimizer, cfg, {}, LossWindow(), [window])
    _, norm, _, layer_norms = step(batch)
    norm, layer_norms = float(norm), layer_norms.numpy()
    assert layer_norms.shape == (len(groups),) and (layer_norms > 0).all()
    np.testing.assert_allclose(np.sqrt(np.sum(layer_norms.astype(np.float64) ** 2)), norm, rtol=1e-4)
    np.testing.assert_allclose(norm, float(tf.linalg.global_norm(expected)), rtol=1e-4)  # before clipping
    for index, members in enumerate(groups.values()):
        np.testing.assert_allclose(layer_norms[index], float(tf.linalg.global_norm([expected[i] for i in members])),
                                   rtol=1e-4)
    summary = window.summary(list(groups))
    assert summary["clipped_fraction"] == 1.0 and summary["gradient_norm"] == pytest.approx(norm)
    assert summary["gradient_norm_max"] == pytest.approx(norm)
    assert list(summary["layer_gradient_norms"]) == list(groups)
    window.reset()
    assert window.summary(list(groups)) == {}


@pytest.mark.slow
@pytest.mark.parametrize("clip_norm, clipped", [(1e-3, 1.0), (1e9, 0.0)])
def test_clipped_fraction_and_norms_reach_metrics_tensorboard_and_report(tmp_path: Path, clip_norm: float,
                                                                         clipped: float, capsys) -> None:
    run = tmp_path / "run"
    Trainer(load_config(task_config(tmp_path, run, steps=20, extra={"train.eval_every": 10,
                                                                      "train.clip_norm": clip_norm}))).train()
    evaluations = records(run)
    assert [r["step"] for r in evaluations] == [10, 20]
    for record in evaluations:
        assert record["clipped_fraction"] == clipped
        assert 0 < record["gradient_norm"] <= record["gradient_norm_max"]
        assert list(record["layer_gradient_norms"]) == GROUPS
        assert all(v > 0 for v in record["layer_gradient_norms"].values())
    steps, fractions = read_scalar(run, "train/clipped_fraction")
    assert steps.tolist() == [20] and fractions.tolist() == [clipped]
    steps, norms = read_scalar(run, "train/gradient_norm")
    assert steps.tolist() == [20] and norms[0] > 0
    for group in GROUPS:
        steps, values = read_scalar(run, f"gradients/{group}")
        assert steps.tolist() == [20] and values[0] > 0, group

    assert main(["report", "--run", str(run), "-o", str(tmp_path / "curves.png")]) == 0
    evaluations_table, layers_table = capsys.readouterr().out.split("\n\n")
    header, *rows = evaluations_table.splitlines()
    assert header.split() == ["step", "train_loss", "gradient_norm", "clipped_fraction"]
    assert [row.split()[0] for row in rows] == ["10", "20"]
    assert all(float(row.split()[3]) == clipped for row in rows)
    header, *rows = layers_table.splitlines()
    assert header.split() == ["layer", "gradient", "norm", "last", "max", "max", "at", "step", "mean"]
    assert [row.split()[0] for row in rows] == GROUPS


@pytest.mark.slow
def test_a_resumed_run_reports_the_gradient_statistics_of_an_uninterrupted_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = task_config(tmp_path, run, steps=20, extra={"train.eval_every": 20, "train.clip_norm": 1.0})
    Trainer(load_config(config)).train()
    straight = records(run)[-1]
    _, straight_layer = read_scalar(run, "gradients/decoder/rnn_0")
    # "Interrupted" after the checkpoint at step 10: the windows of steps 1-10 are in it.
    for path in (run / "checkpoints").glob("ckpt-20*"):
        path.unlink()
    Trainer(load_config(config)).train()
    resumed = records(run)[-1]
    assert resumed["step"] == straight["step"] == 20 and len(records(run)) == 2
    for key in ("gradient_norm", "gradient_norm_max", "clipped_fraction"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
    assert resumed["layer_gradient_norms"] == pytest.approx(straight["layer_gradient_norms"], rel=1e-6)
    _, resumed_layer = read_scalar(run, "gradients/decoder/rnn_0")  # the later log wins
    np.testing.assert_allclose(resumed_layer, straight_layer, rtol=1e-6)


@pytest.mark.slow
def test_checkpoint_without_the_gradient_windows_still_resumes(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "old"
    objects = nmt.training_state.TrainingState.objects

    def before_the_windows(self):  # the checkpoint layout of earlier versions
        return {k: v for k, v in objects(self).items() if k != "gradient_stats"}

    monkeypatch.setattr(nmt.training_state.TrainingState, "objects", before_the_windows)
    Trainer(load_config(task_config(tmp_path, run, steps=10))).train()
    names = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-10")).get_variable_to_shape_map()
    assert not any(n.startswith("gradient_stats/") for n in names)
    monkeypatch.undo()
    Trainer(load_config(task_config(tmp_path, run, steps=20))).train()
    assert math.isfinite(records(run)[-1]["gradient_norm"]) and records(run)[-1]["step"] == 20


@pytest.mark.slow
def test_two_replicas_record_the_norm_of_the_summed_gradients(tmp_path: Path) -> None:
    """Mirrored on two logical CPUs (a global batch of 31 split 16 + 15): the same norms as one device."""
    config = task_config(tmp_path, tmp_path / "unused", 3, {"train.checkpoint_every": 3, "train.batch_size": 31})
    found = {}
    mirrored = (["--set", "train.distribute=mirrored"], {"NMT_CPU_DEVICES": "2"})
    for name, (extra, env) in (("one", ([], {})), ("two", mirrored)):
        command = [sys.executable, "-m", "nmt.cli", "train", "--config", str(config), "--run-dir",
                   str(tmp_path / name), *extra]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        found[name] = records(tmp_path / name)[0]
    assert found["one"]["step"] == found["two"]["step"] == 3
    for key in ("gradient_norm", "gradient_norm_max"):
        assert found["two"][key] == pytest.approx(found["one"][key], rel=1e-4), key
    assert found["two"]["layer_gradient_norms"] == pytest.approx(found["one"]["layer_gradient_norms"], rel=1e-4)
