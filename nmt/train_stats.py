"""What training keeps about itself between reports, as variables in the checkpoint (so a resumed
run reports exactly what an uninterrupted one would): the recent step losses, and the gradient
norms (before clipping, per layer) and clipped steps since the last report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

# train_loss in metrics.jsonl is the mean of the last this many step losses (kept in the checkpoint).
TRAIN_LOSS_WINDOW = 100



class LossWindow:
    """The recent step losses (a ring buffer) and how many were seen, as variables: they are in the
    checkpoint, so train_loss survives a resume."""

    def __init__(self) -> None:
        self.window = tf.Variable(tf.zeros([TRAIN_LOSS_WINDOW]), trainable=False)
        self.count = tf.Variable(0, trainable=False, dtype=tf.int64)

    def trackables(self) -> dict[str, tf.Variable]:
        return {"window": self.window, "count": self.count}

    def add(self, loss: tf.Tensor) -> None:
        """In-graph: record one step's loss."""
        slot = tf.math.floormod(self.count, TRAIN_LOSS_WINDOW)
        self.window.scatter_nd_update([[slot]], [tf.cast(loss, tf.float32)])
        self.count.assign_add(1)

    def mean(self, last: int = TRAIN_LOSS_WINDOW) -> float:
        """The mean of the last ``last`` losses, summed oldest first: in the order they came, so the
        float sum does not depend on where the ring buffer's slot stands."""
        seen = int(self.count)
        kept = min(seen, TRAIN_LOSS_WINDOW, last)
        if not kept:
            return float("nan")
        values = self.window.numpy().astype(np.float64)
        return float(np.mean(values[[(seen - kept + i) % TRAIN_LOSS_WINDOW for i in range(kept)]]))


def gradient_groups(variables: Sequence[tf.Variable]) -> dict[str, list[int]]:
    """The trainable variables grouped by layer, for per-layer gradient norms: group name ->
    indices into ``variables``, in the order the variables come. A group is the layer's path
    below the model (its first one or two components: ``encoder/embedding``, ``encoder/forward_0``,
    ``decoder/rnn_1``, ``attention``, ``bridge``, ``decoder/output_projection``): the model's own
    name (``seq2_seq_2`` for the third model built in a process) is left out, so the names are the
    same in every run of a config."""
    groups: dict[str, list[int]] = {}
    for index, variable in enumerate(variables):
        parts = variable.path.split("/")
        layer = parts[1:-1][:2] or parts[:-1] or ["model"]
        groups.setdefault("/".join(layer), []).append(index)
    return groups


class GradientWindow:
    """Gradient statistics of the steps since the last :meth:`reset`, as variables updated in the
    compiled step (in the checkpoint, so a resumed run reports what an uninterrupted one would):
    the steps, the sum and maximum of the global gradient norm before clipping, the steps that
    were clipped (norm > clip_norm) and the sum of each layer group's norm. A step with a
    non-finite norm (skipped by float16 loss scaling; in float32 training stops) is left out."""

    def __init__(self, groups: int) -> None:
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.clipped = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.norm_sum = tf.Variable(0.0, trainable=False, dtype=tf.float64)
        self.norm_max = tf.Variable(0.0, trainable=False, dtype=tf.float64)
        self.layer_sums = tf.Variable(tf.zeros([groups], tf.float64), trainable=False)

    def trackables(self) -> dict[str, tf.Variable]:
        return {"steps": self.steps, "clipped": self.clipped, "norm_sum": self.norm_sum, "norm_max": self.norm_max,
                "layer_sums": self.layer_sums}

    def add(self, norm: tf.Tensor, layer_norms: tf.Tensor, clip_norm: float) -> None:
        """In-graph: record one step's global norm (before clipping) and its groups' norms."""
        finite = tf.math.is_finite(norm)
        norm64 = tf.where(finite, tf.cast(norm, tf.float64), tf.constant(0.0, tf.float64))
        self.steps.assign_add(tf.cast(finite, tf.int64))
        self.clipped.assign_add(tf.cast(tf.logical_and(finite, norm > clip_norm), tf.int64))
        self.norm_sum.assign_add(norm64)
        self.norm_max.assign(tf.maximum(self.norm_max, norm64))
        self.layer_sums.assign_add(tf.where(finite, tf.cast(layer_norms, tf.float64), tf.zeros_like(self.layer_sums)))

    def reset(self) -> None:
        for variable in self.trackables().values():
            variable.assign(tf.zeros_like(variable))

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """{"gradient_norm": mean, "gradient_norm_max", "clipped_fraction", "layer_gradient_norms":
        {group: mean}} over the recorded steps; {} when there were none."""
        steps = int(self.steps)
        if not steps:
            return {}
        layers = self.layer_sums.numpy() / steps
        return {"gradient_norm": float(self.norm_sum) / steps, "gradient_norm_max": float(self.norm_max),
                "clipped_fraction": int(self.clipped) / steps,
                "layer_gradient_norms": {name: float(value) for name, value in zip(names, layers)}}
