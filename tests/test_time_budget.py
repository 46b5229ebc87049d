"""Time budgets (train.time_budget, nmt train --budget): training stops when the budget is spent,
with the learning rate at its floor; a resumed run finishes the same budget."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import tensorflow as tf

from nmt.cli import main
from nmt.config import load_config
from nmt.config_fields import duration_seconds
from nmt.errors import NmtError
from nmt.schedule import LearningRate, TrainingTime
from nmt.training import Trainer

from test_training import task_config, write_reverse_task

PEAK = 0.01  # task_config's learning rate


def budget_config(tmp_path: Path, name: str, budget: str, dev: bool = True, extra: dict | None = None) -> Path:
    """The reverse task (with a small dev set) with a cosine decay and a time budget; steps: far away.
    The budgets are seconds, but more than the first step's tracing (seconds here)."""
    extra = {"train.time_budget": budget, "train.decay": "cosine", "train.checkpoint_every": 10, **(extra or {})}
    if dev:
        dev_source, dev_target = write_reverse_task(tmp_path, 40, seed=7)
        extra["data.dev"] = {"format": "parallel", "source_path": str(dev_source), "target_path": str(dev_target)}
    return task_config(tmp_path, tmp_path / name, steps=10**6, extra=extra)


def seconds_in(checkpoint: str | Path) -> float:
    """The training time a checkpoint says was spent."""
    return float(tf.train.load_checkpoint(str(checkpoint)).get_tensor("training_seconds/.ATTRIBUTES/VARIABLE_VALUE"))


class Recorder:
    """A progress callback that keeps (wall time, step, expected last step, learning rate)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, int, float]] = []

    def __call__(self, step: int, total: int, values: dict[str, float]) -> None:
        self.calls.append((time.perf_counter(), step, total, values["lr"]))

    def slowest_window(self) -> float:
        """The longest wall time between two reports (20 steps, and an evaluation or checkpoint)."""
        times = [call[0] for call in self.calls]
        return max(b - a for a, b in zip(times, times[1:]))


def test_durations_are_read_and_checked(tmp_path: Path) -> None:
    assert [duration_seconds(t) for t in ("60m", "90s", "1h30m", "2.5h", "1m0.5s")] == [3600, 90, 5400, 9000, 60.5]
    for bad in ("60", "m", "1m30", "30s1m", "1 h", ""):
        with pytest.raises(ValueError, match="not a duration such as 60m, 90s or 1h30m"):
            duration_seconds(bad)
    with pytest.raises(ValueError, match="positive duration"):
        duration_seconds("0m")
    with pytest.raises(NmtError, match=r"train\.time_budget: '90' is not a duration"):
        load_config(task_config(tmp_path, tmp_path / "run", 10, extra={"train.time_budget": "90"}))
    assert load_config(task_config(tmp_path, tmp_path / "run", 10,
                                   extra={"train.time_budget": "1h30m"})).train.time_budget == "1h30m"


def test_budget_option_sets_the_config_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = task_config(tmp_path, tmp_path / "run", 10)
    assert main(["train", "--config", str(config), "--budget", "60"]) == 2  # refused before TensorFlow works
    assert "train.time_budget: '60' is not a duration such as 60m" in capsys.readouterr().err


def test_clock_lays_the_horizon_over_the_time_left() -> None:
    now = [100.0]
    clock = TrainingTime(budget=60.0, steps=10**6, step=0, spent_before=0.0, clock=lambda: now[0])
    assert clock.horizon(0) == 10**6  # no rate measured yet
    now[0] += 5.0  # the first step: tracing, not counted in the rate
    assert clock.horizon(1) == 10**6
    now[0] += 10.0  # 100 steps in 10 s: 10 steps/s, 45 s left
    assert clock.horizon(101) == 101 + 450
    assert not clock.over() and clock.spent() == 15.0
    now[0] += 45.0
    assert clock.horizon(551) == 551 and clock.over()
    # train.steps comes first: it caps the horizon.
    assert TrainingTime(60.0, 300, 0, 0.0, clock=lambda: now[0]).horizon(0) == 300
    # A resumed run: 30 s were spent reaching step 600, so 20 steps/s until this session's rate is known.
    resumed = TrainingTime(budget=60.0, steps=10**6, step=600, spent_before=30.0, clock=lambda: now[0])
    assert resumed.horizon(600) == 600 + 30 * 20
    assert resumed.spent() == 30.0
    # No budget: the horizon is train.steps, and the budget is never over.
    assert TrainingTime(None, 500, 0, 0.0).horizon(10) == 500 and not TrainingTime(None, 500, 0, 0.0).over()


def test_schedule_reaches_its_floor_at_the_horizon_it_is_given() -> None:
    schedule = LearningRate(peak=1.0, warmup=0, decay="cosine", total=100)
    assert float(schedule(99)) == pytest.approx(LearningRate.FLOOR, rel=1e-4)
    schedule.horizon.assign(400.0)  # a new estimate moves the decay without a new schedule
    assert float(schedule(99)) > 0.8
    assert float(schedule(399)) == pytest.approx(LearningRate.FLOOR, rel=1e-4)


@pytest.mark.slow
def test_budget_stops_training_in_time_with_the_learning_rate_at_its_floor(tmp_path: Path) -> None:
    budget = 20.0
    recorder = Recorder()
    Trainer(load_config(budget_config(tmp_path, "budget", "20s")), progress=recorder).train()
    run = tmp_path / "budget"
    final = tf.train.latest_checkpoint(run / "checkpoints")
    last_step = int(final.rsplit("-", 1)[1])
    _, step, total, lr = recorder.calls[-1]
    assert step == last_step == total < 10**6  # stopped by the budget, and said so to the progress bar
    # Training stopped at the first step past the budget (a step here takes milliseconds); then came
    # one evaluation and the checkpoint, which holds the time spent with them.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    evaluation = next(r for r in records if r.get("step") == last_step)
    # Past the budget by less than this run's own slowest 20 steps (however loaded the machine).
    assert budget <= evaluation["train_seconds"] <= budget + recorder.slowest_window()
    assert evaluation["train_seconds"] <= seconds_in(final)
    assert records[-1].get("final")  # the best weights scored on dev afterwards, as without a budget
    # The decay was laid over the budget: the rate started near its peak and ended at its floor.
    assert max(call[3] for call in recorder.calls) > 0.5 * PEAK
    assert lr == pytest.approx(LearningRate.FLOOR * PEAK, rel=0.02)
    # Run again: the budget is spent, nothing more is trained.
    Trainer(load_config(budget_config(tmp_path, "budget", "20s"))).train()
    assert tf.train.latest_checkpoint(run / "checkpoints") == final


class Killed(Exception):
    pass


@pytest.mark.slow
def test_interrupted_budgeted_run_resumes_with_the_time_left(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    budget = 20.0
    config = budget_config(tmp_path, "resumed", "20s", dev=False)
    checkpoints = tmp_path / "resumed" / "checkpoints"

    def kill_halfway(step: int, total: int, values: dict[str, float]) -> None:
        # On the run's own clock: once a checkpoint says half the budget is spent (not a wall
        # time, which set-up on a loaded machine could use up before any checkpoint exists).
        latest = tf.train.latest_checkpoint(checkpoints)
        if latest is not None and seconds_in(latest) >= 0.5 * budget:
            raise Killed  # as a kill would, after the checkpoints saved so far (every 10 steps)

    with pytest.raises(Killed):
        Trainer(load_config(config), progress=kill_halfway).train()
    interrupted = tf.train.latest_checkpoint(checkpoints)
    spent_before = seconds_in(interrupted)
    assert 0.5 * budget <= spent_before < budget
    recorder = Recorder()
    caplog.set_level(logging.INFO, logger="nmt.training")
    Trainer(load_config(config), progress=recorder).train()
    # This session's training, from its first progress report to its last (its data preparation
    # and tracing before, not counted by the budget, left out).
    this_session = recorder.calls[-1][0] - recorder.calls[0][0]
    assert f"time budget 20s: {spent_before:.0f} of 20 s spent" in caplog.text
    final = tf.train.latest_checkpoint(checkpoints)
    assert int(final.rsplit("-", 1)[1]) > int(interrupted.rsplit("-", 1)[1])  # resumed and trained on
    spent = seconds_in(final)
    assert budget <= spent <= budget + recorder.slowest_window()  # the last steps and the checkpoint past it
    # This session trained for the time left only (about budget - spent_before); had the time before
    # been forgotten, it would have trained for the whole budget again. The bound lies halfway.
    assert this_session < budget - 0.5 * spent_before
    assert recorder.calls[-1][3] == pytest.approx(LearningRate.FLOOR * PEAK, rel=0.02)


@pytest.mark.slow
def test_steps_end_a_budgeted_run_when_they_come_first(tmp_path: Path) -> None:
    config = budget_config(tmp_path, "steps-first", "1h", dev=False, extra={"train.steps": 30})
    recorder = Recorder()
    Trainer(load_config(config), progress=recorder).train()
    assert tf.train.latest_checkpoint(tmp_path / "steps-first" / "checkpoints").endswith("ckpt-30")
    # The horizon was train.steps throughout, so the decay ended there.
    assert all(call[2] == 30 for call in recorder.calls)
    assert recorder.calls[-1][3] == pytest.approx(LearningRate.FLOOR * PEAK, rel=1e-3)



@pytest.mark.slow
def test_a_budget_too_small_for_one_step_still_trains_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A new run under a budget shorter than its first step trains that step (and keeps it): a run
    without weights would be no run. A resumed run that spent its budget trains no further."""
    import nmt

    config = task_config(tmp_path, tmp_path / "run", 10**6)
    assert main(["train", "--config", str(config), "--budget", "0.001s"]) == 0
    run = tmp_path / "run"
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-1")
    assert nmt.load(run).translate(["abc"])
    assert main(["train", "--config", str(config), "--budget", "0.001s"]) == 0
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-1")
