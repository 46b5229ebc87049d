"""Scaling out: a real 2-worker MultiWorkerMirroredStrategy run on 127.0.0.1, MirroredStrategy on
two logical CPU devices, mixed precision and XLA: each equal to (or as good as) one device."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt
from nmt.config import load_config
from nmt.errors import NmtError
from nmt.training import Trainer

from conftest import free_ports, lm_config
from test_training import task_config

STEPS = 3


def train_command(config: Path, run_dir: Path, *overrides: str) -> list[str]:
    command = [sys.executable, "-m", "nmt.cli", "train", "--config", str(config), "--run-dir", str(run_dir)]
    for override in overrides:
        command += ["--set", override]
    return command


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    """The model's weights in the run's latest checkpoint, by name."""
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith("model/") and n.endswith("VARIABLE_VALUE")]
    return {n: reader.get_tensor(n) for n in names if "random_state" not in n}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The experiment file (dropout 0: replicas draw their own dropout masks) and a one-device
    run of it: the reference."""
    tmp_path = tmp_path_factory.mktemp("distribute")
    config = task_config(tmp_path, tmp_path / "unused", STEPS, {"train.checkpoint_every": STEPS,
                                                                "train.batch_size": 31})
    reference = tmp_path / "one-device"
    done = subprocess.run(train_command(config, reference), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, reference


def assert_same_weights(run_dir: Path, reference: Path) -> None:
    got, expected = weights(run_dir), weights(reference)
    assert got.keys() == expected.keys() and len(got) > 5
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_two_workers_on_localhost_train_like_one_device(setup, tmp_path: Path) -> None:
    config, reference = setup
    run_dir = tmp_path / "cluster"
    hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        processes.append(subprocess.Popen(train_command(config, run_dir, "train.distribute=multi_worker"), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert (
        "distribute: multi_worker, 2 replicas, worker 0; each takes its share of the global batch of 31"
        in outputs[0][1]
    )
    # The chief (worker 0) writes the run; worker 1 only its scratch tokenizers and cache.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("ckpt-3"))
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "best" / "model.weights.h5").is_file()
    assert sorted(p.name for p in (run_dir / "worker-1").iterdir()) == ["cache", "spm"]
    # A global batch of 31 split 16 + 15 over two machines is the same step as 31 on one device.
    assert_same_weights(run_dir, reference)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_trains_like_one_device(setup, tmp_path: Path) -> None:
    config, reference = setup
    run_dir = tmp_path / "mirrored"
    env = {**os.environ, "NMT_CPU_DEVICES": "2"}
    done = subprocess.run(train_command(config, run_dir, "train.distribute=mirrored"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distribute: mirrored, 2 replicas;" in done.stderr
    assert_same_weights(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("precision, jit", [("mixed_bfloat16", False), ("mixed_float16", False), ("float32", True)])
def test_mixed_precision_and_xla_train(setup, tmp_path: Path, precision: str, jit: bool) -> None:
    config, reference = setup
    run_dir = tmp_path / precision
    Trainer(load_config(config, [f"run_dir={run_dir}", f"train.precision={precision}", f"train.jit_compile={jit}",
                                 "train.steps=30", "train.checkpoint_every=30"])).train()
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored for whatever runs next
    got = weights(run_dir)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in got.values())  # float32 master weights
    losses = [r["train_loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if "train_loss" in r]
    # An untrained model's loss is about ln(vocabulary); only learning brings it well below.
    chance = math.log(nmt.load(run_dir).target_tokenizer.vocab_size)
    assert all(np.isfinite(losses)) and losses[-1] < chance - 0.5, (losses, chance)


def test_distribution_config_errors(setup, tmp_path: Path, monkeypatch) -> None:
    config, _ = setup
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(NmtError, match="multi_worker reads the cluster from the TF_CONFIG environment variable"):
        Trainer(load_config(config, [f"run_dir={tmp_path / 'a'}", "train.distribute=multi_worker"])).train()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(NmtError, match="TF_CONFIG is not valid"):
        Trainer(load_config(config, [f"run_dir={tmp_path / 'b'}", "train.distribute=multi_worker"])).train()
    monkeypatch.setenv("NMT_CPU_DEVICES", "2")  # TensorFlow already runs in this process
    with pytest.raises(NmtError, match="NMT_CPU_DEVICES must be set before TensorFlow starts"):
        Trainer(load_config(config, [f"run_dir={tmp_path / 'c'}", "train.distribute=mirrored"])).train()
    with pytest.raises(NmtError, match="train.distribute: running-text language models"):
        load_config(lm_config(tmp_path, "lm", "a b c\n", {"train.distribute": "mirrored"}))
