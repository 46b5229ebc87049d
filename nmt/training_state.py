"""What a training checkpoint holds (:class:`TrainingState`) and how it is saved: everything a
resumed run needs to continue exactly as an uninterrupted one would."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from nmt.checkpoints import remove_partial_saves
from nmt.errors import NmtError
from nmt.io import writing
from nmt.models import model_variables
from nmt.train_stats import GradientWindow, LossWindow, gradient_groups

# Checkpoint entries that checkpoints written by earlier versions lack: they start empty on restore.
OPTIONAL = ("train_losses", "gradient_stats", "training_seconds")


@dataclasses.dataclass
class TrainingState:
    """Model, optimizer, the data iterator's position, the dev record (best score, evaluations
    without improvement), the carried TBPTT state, the recent losses, the gradient statistics since
    the last report and evaluation, and the seconds spent training (what a time budget counts)."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    iterator: Any
    carried: Any
    best_score: tf.Variable = dataclasses.field(
        default_factory=lambda: tf.Variable(-1e9, trainable=False, dtype=tf.float32))
    stale_evals: tf.Variable = dataclasses.field(
        default_factory=lambda: tf.Variable(0, trainable=False, dtype=tf.int64))
    losses: LossWindow = dataclasses.field(default_factory=LossWindow)
    seconds: tf.Variable = dataclasses.field(
        default_factory=lambda: tf.Variable(0.0, trainable=False, dtype=tf.float64))
    # The model's layer groups (names for the per-layer gradient norms), and the gradient
    # statistics since the last 20-step report and since the last evaluation.
    gradient_groups: list[str] = dataclasses.field(init=False)
    report_window: GradientWindow = dataclasses.field(init=False)
    eval_window: GradientWindow = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.gradient_groups = list(gradient_groups(self.model.trainable_variables))
        self.report_window = GradientWindow(len(self.gradient_groups))
        self.eval_window = GradientWindow(len(self.gradient_groups))

    def objects(self) -> dict[str, Any]:
        """The checkpoint's entries by name. The names are the file format: "best_bleu" holds the
        dev quality of any task (a language model's is minus its dev loss); renaming it would make
        every checkpoint written so far unreadable."""
        return dict(
            model=model_variables(self.model), optimizer=self.optimizer, data=self.iterator,
            best_bleu=self.best_score, stale_evals=self.stale_evals,
            carried_state={f"state_{i}": v for i, v in enumerate(tf.nest.flatten(self.carried))},
            train_losses=self.losses.trackables(),
            gradient_stats={"report": self.report_window.trackables(), "eval": self.eval_window.trackables()},
            training_seconds=self.seconds,
        )

    @property
    def step(self) -> int:
        """The optimizer's step count (a distributed variable under a strategy: read as a tensor)."""
        return int(tf.convert_to_tensor(self.optimizer.iterations.value))

    def restore(self, prefix: Any) -> None:
        stored = {name.split("/")[0] for name in tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()}
        restoring = {k: v for k, v in self.objects().items() if k not in OPTIONAL or k in stored}
        tf.train.Checkpoint(**restoring).restore(str(prefix)).assert_existing_objects_matched()

    def manager(self, directory: Path, keep: int) -> tf.train.CheckpointManager:
        """The manager that saves this state into ``directory``, keeping the newest ``keep``."""
        return tf.train.CheckpointManager(tf.train.Checkpoint(**self.objects()), directory, max_to_keep=keep)


def save_checkpoint(manager: tf.train.CheckpointManager, step: int, keep_files: bool) -> None:
    """Saves ``ckpt-step``; a full disk leaves the earlier checkpoints whole and the space given
    back. ``keep_files`` False: a worker that only takes part in the save (a collective under
    multi_worker) deletes what it wrote."""
    save_dir = Path(manager.directory)
    try:
        with writing(save_dir / f"ckpt-{step}"):
            manager.save(checkpoint_number=step)
    except NmtError:
        remove_partial_saves(save_dir)
        raise
    if not keep_files:
        shutil.rmtree(save_dir, ignore_errors=True)
