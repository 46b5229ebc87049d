"""The learning-rate schedule and the clock of a time budget: the horizon the schedule decays
towards is the step count, or under a time budget the step training is expected to reach when it
ends (measured as training goes, so the schedule follows the machine's real speed)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then constant, inverse-square-root or cosine decay to ``FLOOR`` of the peak
    at the horizon: ``total`` steps, or under a time budget the step training is expected to reach
    when the budget ends (:class:`TrainingTime` gives ``horizon``, a variable, as it measures the
    step rate: the compiled step reads it without being traced again)."""

    FLOOR = 0.1  # of the peak, where cosine decay ends

    def __init__(self, peak: float, warmup: int, decay: str, total: int) -> None:
        self.peak, self.warmup, self.decay = peak, warmup, decay
        self.horizon = tf.Variable(float(total), trainable=False, dtype=tf.float32, name="learning_rate_horizon")

    def __call__(self, step: Any) -> tf.Tensor:
        step = tf.cast(step, tf.float32) + 1.0
        warmup = float(max(self.warmup, 1))
        rate = self.peak * tf.minimum(1.0, step / warmup)
        if self.decay == "inverse_sqrt":
            rate = rate * tf.minimum(1.0, tf.sqrt(warmup / step))
        elif self.decay == "cosine":
            progress = tf.clip_by_value((step - warmup) / tf.maximum(self.horizon - warmup, 1.0), 0.0, 1.0)
            rate = rate * (self.FLOOR + (1.0 - self.FLOOR) / 2 * (1.0 + tf.cos(math.pi * progress)))
        return rate

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup": self.warmup, "decay": self.decay, "total": int(self.horizon.numpy())}


class TrainingTime:
    """The training time of a run: this session's plus the earlier sessions' (``spent_before``, which
    the checkpoint keeps). Under a time budget (``budget`` seconds), whether it is spent, and the
    step that training is expected to reach when it ends, capped at ``steps``.

    The step rate is measured over this session from the end of its first step (which includes
    tracing); until then it is the earlier sessions' average, if any. Evaluations and checkpoint
    saves are inside the measured time, as they will be in the time left."""

    def __init__(self, budget: float | None, steps: int, step: int, spent_before: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget, self.steps, self.spent_before, self.clock = budget, steps, spent_before, clock
        self.started, self.start_step = clock(), step
        self.earlier_rate = step / spent_before if step and spent_before > 0 else None
        self._first: tuple[int, float] | None = None  # (step, time) at the end of this session's first step

    def spent(self) -> float:
        return self.spent_before + self.clock() - self.started

    def over(self) -> bool:
        return self.budget is not None and self.spent() >= self.budget

    def horizon(self, step: int) -> int:
        """The step expected when the budget ends (``steps`` without a budget); call it after each step."""
        now = self.clock()
        if self._first is None and step > self.start_step:
            self._first = (step, now)
        rate = self.earlier_rate
        if self._first is not None and step > self._first[0] and now > self._first[1]:
            rate = (step - self._first[0]) / (now - self._first[1])
        if self.budget is None or rate is None:
            return self.steps
        left = max(self.budget - self.spent_before - (now - self.started), 0.0)
        return min(self.steps, step + math.ceil(left * rate))
