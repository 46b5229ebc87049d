"""Training survives damage: a garbage state file, damaged checkpoints, a full disk, a second
trainer on the same run directory, a diverging loss, and a resume keeps the train_loss window."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nmt.training_state
from nmt.checkpoints import checkpoint_prefixes, newest_intact
from nmt.config import load_config
from nmt.errors import NmtError
from nmt.training import Trainer

from faults import fill_disk, kill_when, replace_with, run_nmt, scramble, small_disk, start_nmt, truncate
from test_training import task_config

DATA = "data-00000-of-00001"


def copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def tiny_config(run: Path, *overrides: str):
    """The tiny en-ja run's own config, trained on in its copy ``run``."""
    return load_config(run / "config.yaml", [f"run_dir={run}", *overrides])


def numbers(run: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in checkpoint_prefixes(run / "checkpoints"))


@pytest.mark.slow
def test_garbage_state_file_resumes_from_newest_intact_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    replace_with(run / "checkpoints" / "checkpoint", "garbage {{{\n")
    result = run_nmt(["train", "--config", run / "config.yaml", "--run-dir", run, "--set", "train.steps=41",
                      "--set", "train.keep_checkpoints=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'ckpt-40'}, the newest intact checkpoint" in result.stderr
    assert f"resumed from {run / 'checkpoints' / 'ckpt-40'} at step 40" in result.stderr
    # The repaired state file let the manager's keep-2 bookkeeping delete ckpt-20.
    assert numbers(run) == [40, 41]
    assert tf.train.latest_checkpoint(run / "checkpoints").endswith("ckpt-41")


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tiny_run: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    run = copy_run(tiny_run, tmp_path)
    truncate(run / "checkpoints" / f"ckpt-40.{DATA}")
    # Left by a save killed midway: removed on start.
    (run / "checkpoints" / "ckpt-60_temp" / "part-00000").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        Trainer(tiny_config(run, "train.steps=41", "train.eval_every=1000")).train()
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"checkpoint {run / 'checkpoints' / 'ckpt-40'} is damaged" in warnings
    assert not list((run / "checkpoints").glob("*_temp*"))
    # Resumed at 20: ckpt-40 was written again (whole), then ckpt-41.
    assert numbers(run) == [20, 40, 41]
    assert newest_intact(run / "checkpoints") == run / "checkpoints" / "ckpt-41"


@pytest.mark.slow
def test_no_intact_checkpoint_is_an_error_and_restart_starts_over(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path)
    truncate(run / "checkpoints" / f"ckpt-40.{DATA}")
    scramble(run / "checkpoints" / f"ckpt-20.{DATA}")
    with pytest.raises(NmtError) as error:
        Trainer(tiny_config(run, "train.steps=50")).train()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"no intact checkpoint to resume from in {run / 'checkpoints'} "
                              f"({run / 'checkpoints' / 'ckpt-40'}: ")
    assert f"; {run / 'checkpoints' / 'ckpt-20'}: " in message
    assert "nmt train --restart to start over" in message
    assert numbers(run) == [20, 40]  # nothing touched
    Trainer(tiny_config(run, "train.steps=10", "train.eval_every=10", "train.checkpoint_every=10"),
            restart=True).train()
    assert numbers(run) == [10]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in records] == [10, None]  # the old run's records are gone; None: the final one


@pytest.mark.slow
def test_full_disk_during_checkpoint_save_is_one_line_error(tmp_path: Path) -> None:
    run = tmp_path / "reverse"
    config = task_config(tmp_path, run, steps=20)
    with small_disk(tmp_path, kib=64) as disk:
        run.mkdir()
        (run / "checkpoints").symlink_to(disk)
        result = run_nmt(["train", "--config", config])
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last == f"nmt: error: no space left on device while writing {run / 'checkpoints' / 'ckpt-10'}"
        assert "Traceback" not in result.stderr
        assert os.listdir(disk) == []  # the half-written ckpt-10_temp was removed


@pytest.mark.slow
def test_full_disk_while_writing_best_weights_or_metrics(tmp_path: Path) -> None:
    run = tmp_path / "reverse"
    config = load_config(task_config(tmp_path, run, steps=10, extra={"train.eval_every": 10}))
    with small_disk(tmp_path, kib=64) as disk:
        run.mkdir()
        (disk / "best").mkdir()
        (run / "best").symlink_to(disk / "best")
        with pytest.raises(NmtError, match=re.escape(f"no space left on device while writing {run / 'best'}")):
            Trainer(config).train()
        assert os.listdir(disk / "best") == []  # no half-written weights left
    with small_disk(tmp_path, kib=64) as disk:
        (run / "best").unlink()
        metrics = disk / "metrics.jsonl"
        before = json.dumps({"step": 0, "pad": ""})
        before = json.dumps({"step": 0, "pad": "x" * (4095 - len(before))}) + "\n"  # one whole tmpfs page
        metrics.write_text(before)
        (run / "metrics.jsonl").unlink(missing_ok=True)
        (run / "metrics.jsonl").symlink_to(metrics)
        with open(fill_disk(disk), "ab", buffering=0) as filler, pytest.raises(OSError):
            while True:  # and the last pages
                filler.write(b"\0" * 512)
        with pytest.raises(NmtError, match=re.escape(f"no space left on device while writing {run / 'metrics.jsonl'}")):
            Trainer(config).train()
        assert metrics.read_text() == before  # not half a record
    assert numbers(run) == []  # the evaluation (step 10) comes before that step's checkpoint


@pytest.mark.slow
def test_second_trainer_on_a_run_directory_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    run = tmp_path / "reverse"
    config = task_config(tmp_path, run, steps=100_000)
    first = start_nmt(["train", "--config", config])
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_prefixes(run / "checkpoints") and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert checkpoint_prefixes(run / "checkpoints"), "the first trainer saved no checkpoint"
        second = run_nmt(["train", "--config", config], timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"nmt: error: {run} is being trained by another process (pid {first.pid}): wait for it to finish or "
            "stop it, or give another run_dir")
    finally:
        assert kill_when(first, lambda: True)
    done = int(newest_intact(run / "checkpoints").name[5:])  # a kill midway through a save leaves it unfinished
    third = run_nmt(["train", "--config", config, "--set", f"train.steps={done + 1}"])
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{done}'} at step {done}" in third.stderr


@pytest.mark.slow
def test_diverging_loss_stops_with_error_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "reverse"
    Trainer(load_config(task_config(tmp_path, run, steps=10))).train()
    # Resumed with an absurd learning rate: the weights blow up within a step or two.
    diverging = load_config(task_config(tmp_path, run, steps=40, extra={"train.learning_rate": 1e30,
                                                                         "train.checkpoint_every": 1,
                                                                         "train.eval_every": 1}))
    with pytest.raises(NmtError) as error:
        Trainer(diverging).train()
    message = str(error.value)
    assert re.match(r"training diverged at step 1[1-3] \(loss nan", message), message
    # Saved every step and evaluated every step, yet nothing of the NaN weights reached the disk.
    saved = numbers(run)
    assert saved[0] == 10 and saved[-1] < int(message.split()[4])
    assert f"the last good checkpoint is {run / 'checkpoints' / f'ckpt-{saved[-1]}'}:" in message
    assert "lower train.learning_rate (now 1e+30) or train.clip_norm (now 5)" in message
    for number in saved:
        reader = tf.train.load_checkpoint(str(run / "checkpoints" / f"ckpt-{number}"))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.isfinite(reader.get_tensor(name)).all(), (number, name)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    # best/ is the weights from before, or finite ones that replaced them: either way, finite.
    assert all(np.isfinite(w.numpy()).all() for w in nmt.load(run).model.weights)


def metrics_at(run: Path, step: int) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r.get("step") == step)


@pytest.mark.slow
def test_resumed_run_writes_the_same_train_loss_as_an_uninterrupted_one(tmp_path: Path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(load_config(task_config(tmp_path, straight, steps=20))).train()
    Trainer(load_config(task_config(tmp_path, interrupted, steps=10))).train()
    Trainer(load_config(task_config(tmp_path, interrupted, steps=20))).train()
    # The window holds steps 1-20 in both (not only the 10 since the restart).
    assert metrics_at(interrupted, 20)["train_loss"] == metrics_at(straight, 20)["train_loss"]
    assert metrics_at(interrupted, 10)["train_loss"] != metrics_at(straight, 20)["train_loss"]


@pytest.mark.slow
def test_checkpoint_without_the_loss_window_still_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "old"
    objects = nmt.training_state.TrainingState.objects

    def before_the_window(self):  # the checkpoint layout of earlier versions
        return {k: v for k, v in objects(self).items() if k != "train_losses"}

    monkeypatch.setattr(nmt.training_state.TrainingState, "objects", before_the_window)
    Trainer(load_config(task_config(tmp_path, run, steps=10))).train()
    names = tf.train.load_checkpoint(str(run / "checkpoints" / "ckpt-10")).get_variable_to_shape_map()
    assert not any(n.startswith("train_losses/") for n in names)
    monkeypatch.undo()
    Trainer(load_config(task_config(tmp_path, run, steps=20))).train()
    assert numbers(run) == [10, 20]
    assert math.isfinite(metrics_at(run, 20)["train_loss"])
