"""Where training runs: one device, every local device (``mirrored``) or a cluster of machines
(``multi_worker``), with TensorFlow's own ``tf.distribute`` strategies.

The training step is written once, for any number of replicas (see :mod:`nmt.training`): every
worker reads the same global batches (same files, same seed) and each replica takes its share of
the rows; gradients are summed over all replicas and normalised by the global batch's token count,
so N replicas compute exactly what one device computes on the whole batch.

``multi_worker`` reads the cluster from the standard ``TF_CONFIG`` environment variable, which any
launcher (Kubernetes, Slurm scripts, Vertex AI) sets::

    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}

Worker 0 (or the ``chief`` task, if the cluster has one) is the chief: it writes checkpoints, logs,
dev scores and the best weights; the other workers keep their own scratch files in
``run_dir/worker-<index>/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from nmt.errors import NmtError

CPU_DEVICES_VARIABLE = "NMT_CPU_DEVICES"


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """``none``: the default strategy (one device). ``mirrored``: every local GPU, or without a
    GPU every logical CPU device (one, unless ``NMT_CPU_DEVICES=N`` splits the CPU into N, which
    lets a laptop run the mirrored code path). ``multi_worker``: the cluster of ``TF_CONFIG``.

    Must run before TensorFlow executes anything else in the process."""
    split = os.environ.get(CPU_DEVICES_VARIABLE)
    if split:
        if not split.isdigit() or int(split) < 1:
            raise NmtError(f"{CPU_DEVICES_VARIABLE} must be a positive number of logical CPU devices, got {split!r}")
        cpu = tf.config.list_physical_devices("CPU")[0]
        wanted = [tf.config.LogicalDeviceConfiguration()] * int(split)
        if tf.config.get_logical_device_configuration(cpu) != wanted:
            try:
                tf.config.set_logical_device_configuration(cpu, wanted)
            except RuntimeError:
                raise NmtError(f"{CPU_DEVICES_VARIABLE} must be set before TensorFlow starts in this process") from None
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise NmtError("train.distribute: multi_worker reads the cluster from the TF_CONFIG environment variable, "
                           "which is not set (see README, 'Scaling out')")
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
            cluster["cluster"], cluster["task"]["index"]  # noqa: B018 - what the strategy needs
        except (ValueError, KeyError, TypeError) as error:
            raise NmtError(f"TF_CONFIG is not valid: {error!r}; expected "
                           '{"cluster": {"worker": ["host:port", ...]}, '
                           '"task": {"type": "worker", "index": 0}}') from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise NmtError(f"train.distribute: unknown strategy {kind!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, but for the non-chief workers of a cluster)."""
    return strategy.extended.should_checkpoint


def worker_dir(strategy: tf.distribute.Strategy, run_dir: Path) -> Path:
    """Where this process keeps its scratch files: the run directory for the chief,
    ``run_dir/worker-<index>`` for the other workers of a cluster."""
    if is_chief(strategy):
        return run_dir
    return run_dir / f"worker-{strategy.cluster_resolver.task_id}"


def from_chief(strategy: tf.distribute.Strategy, value: int) -> int:
    """The chief's int32 ``value``, on every worker (the chief holds replica 0). A collective:
    every worker must call it at the same point."""
    def local() -> tf.Tensor:
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(first, tf.constant(value, tf.int32), 0)

    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(local), axis=None))
