"""Training: the run's task prepares data and builds the model; this module trains it, resumably,
with dev evaluation, best-model selection and early stopping, into one run directory
(:class:`nmt.run_dir.RunDir`).

A resume starts from the newest checkpoint whose files read back whole (TensorFlow's state file
is repaired if it names another); a full disk, a second trainer or a diverging loss stop training
with a one-line NmtError and leave the files as they were before. Progress is logged (logger
``nmt.training``); the CLI decides what reaches the terminal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import yaml

from nmt.checkpoints import remove_partial_saves
from nmt.config import Config
from nmt.distribute import from_chief, is_chief, make_strategy, worker_dir
from nmt.errors import NmtError
from nmt.models import model_variables
from nmt.pipeline import make_dataset
from nmt.run_dir import RunDir, hold_run_dir, resume_point, start_over, writing
from nmt.tasks import PreparedData, Task, task_for
from nmt.train_step import (
    TRAIN_LOSS_WINDOW,
    GradientWindow,
    LearningRate,
    LossWindow,
    gradient_groups,
    make_eval_loss,
    make_train_step,
)

log = logging.getLogger(__name__)

# Called every 20 steps with (step, total steps, {"loss", "tok/s", "lr"}); without one, a log line
# every 100 steps.
Progress = Callable[[int, int, dict[str, float]], None]


def check_compatible(run: RunDir, config: Config) -> None:
    """A run directory keeps one model: refuse to resume it with another architecture."""
    if not run.config_file.is_file():
        return
    stored = yaml.safe_load(run.config_file.read_text(encoding="utf-8")) or {}
    current = config.to_dict()
    # Only what has been built binds: tokenizers once trained, the model once checkpointed.
    built = {"tokenizer": run.spm.is_dir(), "model": run.checkpoints.is_dir()}
    if built["model"] and task_for(config).carries_state:
        # The carried TBPTT state is [batch_size, units] and the data iterator's position is
        # counted in windows: both are in the checkpoint.
        for key in ("bptt_steps", "batch_size"):
            before = (stored.get("train") or {}).get(key)
            if before != getattr(config.train, key):
                raise NmtError(
                    f"{run} was trained with train.{key}={before!r} (now {getattr(config.train, key)!r}); "
                    "a running-text model resumes only with the same value: choose another run_dir or restore it"
                )
    for section in ("model", "tokenizer"):
        if built[section] and stored.get(section) != current[section]:
            differences = [f"{section}.{k}: {stored.get(section, {}).get(k)!r} -> {v!r}"
                           for k, v in current[section].items() if stored.get(section, {}).get(k) != v]
            raise NmtError(f"{run} holds a model trained with another {section} config "
                           f"({'; '.join(differences)}); choose another run_dir or delete this one")


@dataclasses.dataclass
class TrainingState:
    """Everything a checkpoint holds: model, optimizer, the data iterator's position, the dev
    record (best score, evaluations without improvement), the carried TBPTT state, the recent
    losses and the gradient statistics since the last report and evaluation, so a resumed run
    continues exactly."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    iterator: Any
    carried: Any
    best_score: tf.Variable = dataclasses.field(
        default_factory=lambda: tf.Variable(-1e9, trainable=False, dtype=tf.float32))
    stale_evals: tf.Variable = dataclasses.field(
        default_factory=lambda: tf.Variable(0, trainable=False, dtype=tf.int64))
    losses: LossWindow = dataclasses.field(default_factory=LossWindow)
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
        """"best_bleu" names the dev score in checkpoints written before language models;
        "train_losses" and "gradient_stats" are missing from checkpoints written before they existed."""
        return dict(
            model=model_variables(self.model), optimizer=self.optimizer, data=self.iterator,
            best_bleu=self.best_score, stale_evals=self.stale_evals,
            carried_state={f"state_{i}": v for i, v in enumerate(tf.nest.flatten(self.carried))},
            train_losses=self.losses.trackables(),
            gradient_stats={"report": self.report_window.trackables(), "eval": self.eval_window.trackables()},
        )

    @property
    def step(self) -> int:
        """The optimizer's step count (a distributed variable under a strategy: read as a tensor)."""
        return int(tf.convert_to_tensor(self.optimizer.iterations.value))

    def restore(self, prefix: Any) -> None:
        stored = {name.split("/")[0] for name in tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()}
        # A checkpoint of an earlier version: its missing windows start empty.
        optional = ("train_losses", "gradient_stats")
        restoring = {k: v for k, v in self.objects().items() if k not in optional or k in stored}
        tf.train.Checkpoint(**restoring).restore(str(prefix)).assert_existing_objects_matched()


def _weights_finite(model: keras.Model) -> bool:
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables]))


class Trainer:
    """Runs ``config`` in ``config.run_dir``; calling :meth:`train` again resumes where it stopped
    (from the newest intact checkpoint). ``restart``: delete the run's checkpoints, best weights
    and metrics first and train from step 0 (without it, a run directory that holds checkpoints is
    never started over). ``progress`` receives the training figures every 20 steps."""

    def __init__(self, config: Config, restart: bool = False, progress: Progress | None = None) -> None:
        self.config = config
        self.run = RunDir(config.run_dir)
        self.run_dir = self.run.path
        self.restart = restart
        self.progress = progress
        self.task: Task = task_for(config)
        self._dev_batches: tf.data.Dataset | None = None

    def train(self) -> Any:
        """Trains to ``train.steps`` (or early stopping), then scores the best weights on dev:
        the final scores (BLEU or perplexity), or None without a dev set or on a non-chief worker."""
        # The strategy first: a cluster must be set up before TensorFlow runs anything else.
        strategy = make_strategy(self.config.train.distribute)
        chief = is_chief(strategy)
        work_dir = worker_dir(strategy, self.run_dir)  # tokenizers and cache: the chief's are the run's
        # The chief holds the run directory; the other workers of its cluster write only their own scratch folders.
        with hold_run_dir(self.run_dir) if chief else contextlib.nullcontext():
            if self.restart and chief:
                start_over(self.run_dir)
            return self._train_holding(strategy, RunDir(work_dir))

    def _train_holding(self, strategy: tf.distribute.Strategy, work: RunDir) -> Any:
        config, cfg = self.config, self.config.train
        chief = is_chief(strategy)
        check_compatible(self.run, config)
        work.path.mkdir(parents=True, exist_ok=True)
        if chief:
            self.run.save_config(config)
        keras.utils.set_random_seed(config.seed)
        data = self.task.prepare_data(work)
        if strategy.num_replicas_in_sync > 1:
            self._check_workers_agree(strategy, work, data)
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(cfg.precision)
        try:
            with strategy.scope():
                model = self.task.build_model(data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size)
                schedule = LearningRate(cfg.learning_rate, cfg.warmup_steps, cfg.decay, cfg.steps)
                optimizer = keras.optimizers.Adam(learning_rate=schedule)
                if cfg.precision == "mixed_float16":
                    # float16 gradients underflow: the loss is scaled up, and steps with inf/NaN
                    # gradients are skipped while the scale adapts.
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(model.trainable_variables)
            self._train_loop(strategy, model, optimizer, schedule, data, work)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        return self.final_evaluation(data) if chief else None

    def _check_workers_agree(self, strategy: tf.distribute.Strategy, work: RunDir, data: PreparedData) -> None:
        cfg = self.config.train
        log.info("distribute: %s, %d replicas%s; each takes its share of the global batch of %d", cfg.distribute,
                 strategy.num_replicas_in_sync,
                 f", worker {strategy.cluster_resolver.task_id}" if cfg.distribute == "multi_worker" else "",
                 cfg.batch_size)
        # Every worker trains its tokenizers from the same data and seed: check they agree.
        fingerprint = int(hashlib.sha1(data.source_tokenizer.model_proto + data.target_tokenizer.model_proto)
                          .hexdigest()[:7], 16)
        if from_chief(strategy, fingerprint) != fingerprint:
            raise NmtError(f"the tokenizers of this worker ({work}) differ from the chief's: all workers must "
                           "read the same training data")

    def _resume(self, strategy: tf.distribute.Strategy, state: TrainingState, work: RunDir
                ) -> tf.train.CheckpointManager:
        """Restores the newest intact checkpoint, if any; the manager that saves the next ones.
        Only the chief keeps checkpoints; the other workers take part in saving (a collective under
        multi_worker) into a scratch folder that is deleted. All resume from the chief's."""
        chief = is_chief(strategy)
        save_dir = self.run.checkpoints if chief else work.path / "checkpoints-scratch"
        latest = resume_point(self.run.checkpoints, chief)  # before the manager reads the state file
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(**state.objects()), save_dir,
                                             max_to_keep=self.config.train.keep_checkpoints)
        if latest:
            state.restore(latest)
            log.info("resumed from %s at step %d", latest, state.step)
        if strategy.num_replicas_in_sync > 1 and from_chief(strategy, state.step) != state.step:
            raise NmtError(f"this worker resumed at step {state.step}, not at the chief's: it cannot read "
                           f"the chief's checkpoints in {self.run.checkpoints} (put run_dir on a shared filesystem)")
        return manager

    def _train_loop(self, strategy, model, optimizer, schedule, data: PreparedData, work: RunDir) -> None:
        cfg, chief = self.config.train, is_chief(strategy)
        parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        log.info("model: %.2fM parameters%s%s", parameters / 1e6,
                 f", {cfg.precision}" if cfg.precision != "float32" else "", ", XLA" if cfg.jit_compile else "")
        # Every worker reads the same global batches (same data, same seed); a plain iterator is
        # checkpointable, which a distributed one is not. TBPTT: the state at the end of one batch
        # starts the next (row r continues row r).
        carried = tf.nest.map_structure(lambda t: tf.Variable(tf.cast(t, tf.float32), trainable=False),
                                        model.initial_state(cfg.batch_size) if self.task.carries_state else {})
        state = TrainingState(model, optimizer, iter(self.task.training_dataset(data.train)), carried)
        manager = self._resume(strategy, state, work)
        train_step = make_train_step(strategy, model, optimizer, cfg, carried, state.losses,
                                     (state.report_window, state.eval_window))
        eval_loss = make_eval_loss(model)
        predictor = self.task.predictor(model, data.source_tokenizer, data.target_tokenizer)
        writer = tf.summary.create_file_writer(str(self.run.logs)) if chief else tf.summary.create_noop_writer()
        step = state.step
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        window_tokens, window_start = 0.0, time.perf_counter()
        stopped_early = cfg.early_stopping is not None and int(state.stale_evals) >= cfg.early_stopping
        if stopped_early:
            log.info("this run stopped early at step %d; raise train.early_stopping to train on", step)
        while step < cfg.steps and not stopped_early:
            loss, norm, tokens, _ = train_step(next(state.iterator))
            step += 1
            # Float16 loss scaling skips steps with inf gradients itself; a non-finite loss, or
            # gradient norm in float32, means the weights are (about to be) NaN: stop, save nothing.
            if not math.isfinite(float(loss)) or (not loss_scaled and not math.isfinite(float(norm))):
                raise self._diverged(step, float(loss), float(norm), manager)
            window_tokens += float(tokens)
            if step % 20 == 0 or step == cfg.steps:
                rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                self._report(step, state, rate, float(schedule(step - 1)), float(norm), writer)
                window_tokens, window_start = 0.0, time.perf_counter()
            saving = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if (saving or step % cfg.eval_every == 0) and not _weights_finite(model):
                raise self._diverged(step, float(loss), float(norm), manager)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                # Dev scores once, by the chief; the others wait for its verdict on early stopping.
                if chief:
                    stopped_early = self._evaluation_point(step, predictor, data, eval_loss, state, writer)
                if strategy.num_replicas_in_sync > 1:
                    stopped_early = bool(from_chief(strategy, int(stopped_early)))
                state.eval_window.reset()  # on every worker: the checkpoint holds it
                window_tokens, window_start = 0.0, time.perf_counter()  # evaluation is not training time
            if saving or stopped_early:
                self._save_checkpoint(manager, step, chief)
            if stopped_early:
                log.info("early stopping at step %d: no dev improvement in %d evaluations", step, cfg.early_stopping)

    def _report(self, step: int, state: TrainingState, rate: float, lr: float, norm: float, writer: Any) -> None:
        """The figures of the last 20 steps: to the progress callback (or a log line every 100
        steps) and to TensorBoard, with the last step's gradient norm (before clipping), the
        fraction of the 20 steps that were clipped and each layer's mean gradient norm
        (``gradients/<layer>``). ``lr`` is the rate the last step's update used."""
        total = self.config.train.steps
        recent_loss = state.losses.mean(20)
        gradients = state.report_window.summary(state.gradient_groups)
        state.report_window.reset()
        values = {"loss": recent_loss, "tok/s": rate, "lr": lr}
        if self.progress is not None:
            self.progress(step, total, values)
        elif step % 100 == 0 or step == total:
            log.info("step %d/%d: %s", step, total, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        with writer.as_default(step=step):
            tf.summary.scalar("train/loss", recent_loss)
            tf.summary.scalar("train/target_tokens_per_second", rate)
            tf.summary.scalar("train/learning_rate", lr)
            tf.summary.scalar("train/gradient_norm", norm)  # the last step's, before clipping
            if gradients:
                tf.summary.scalar("train/clipped_fraction", gradients["clipped_fraction"])
                for group, value in gradients["layer_gradient_norms"].items():
                    tf.summary.scalar(f"gradients/{group}", value)

    def _save_checkpoint(self, manager: tf.train.CheckpointManager, step: int, chief: bool) -> None:
        save_dir = Path(manager.directory)
        try:
            with writing(save_dir / f"ckpt-{step}"):
                manager.save(checkpoint_number=step)
        except NmtError:
            remove_partial_saves(save_dir)  # give the space back; the earlier checkpoints are whole
            raise
        if not chief:
            shutil.rmtree(save_dir, ignore_errors=True)

    def _diverged(self, step: int, loss: float, norm: float, manager: tf.train.CheckpointManager) -> NmtError:
        cfg = self.config.train
        kept = manager.latest_checkpoint
        keeps = f"the last good checkpoint is {kept}" if kept else "no checkpoint had been saved yet"
        return NmtError(
            f"training diverged at step {step} (loss {loss:g}, gradient norm {norm:g}) and stopped before saving "
            f"anything of it; {keeps}: lower train.learning_rate (now {cfg.learning_rate:g}) or train.clip_norm "
            f"(now {cfg.clip_norm:g}), or add train.warmup_steps, then run nmt train again"
            + (" to resume from it" if kept else "")
        )

    def _dev_loss(self, data: PreparedData, eval_loss: Any) -> Callable[[], float]:
        """The loss of the whole encoded dev set (its batches are built once)."""

        def dev_loss() -> float:
            if self._dev_batches is None:
                self._dev_batches = make_dataset(data.dev, batch_size=64, repeat=False, shuffle=False)
            total, tokens = 0.0, 0.0
            for batch in self._dev_batches:
                loss, count = eval_loss(batch)
                total += float(loss) * float(count)
                tokens += float(count)
            return total / max(tokens, 1.0)

        return dev_loss

    def _evaluation_point(self, step: int, predictor: Any, data: PreparedData, eval_loss: Any,
                          state: TrainingState, writer: Any) -> bool:
        """Scores dev, records it, keeps the best weights; True when early stopping ends training."""
        cfg = self.config.train
        result = self.task.dev_scores(predictor, data, self._dev_loss(data, eval_loss), cfg.eval_max_sentences)
        record = {"step": step, "time": time.time(), "train_loss": state.losses.mean(TRAIN_LOSS_WINDOW),
                  **state.eval_window.summary(state.gradient_groups), **result}
        self.run.append_metrics(record)
        with writer.as_default(step=step):
            for key in ("dev_loss", "dev_bleu", "dev_chrf", "dev_word_perplexity", "dev_bits_per_character"):
                if key in result:
                    tf.summary.scalar(f"dev/{key[4:]}", result[key])
        shown = ", ".join(f"{k} {v:.3f}" for k, v in record.items()
                          if k not in ("step", "time", "gradient_norm_max", "layer_gradient_norms"))
        log.info("\nstep %d: %s", step, shown)
        if "dev_loss" not in result:
            # Without a dev set the latest weights are the best we know of; the dev record
            # (best_score, stale_evals) is left alone so that a later run with a dev set starts clean.
            self._save_best(state.model)
            return False
        quality, described = self.task.quality(result)
        if quality > float(state.best_score):
            state.best_score.assign(quality)
            state.stale_evals.assign(0)
            self._save_best(state.model)
            log.info("new best model (%s) saved to %s", described, self.run.best_weights)
            return False
        state.stale_evals.assign_add(1)
        return cfg.early_stopping is not None and int(state.stale_evals) >= cfg.early_stopping

    def _save_best(self, model: keras.Model) -> None:
        path = self.run.best_weights
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".tmp." + path.name)  # Keras wants the .weights.h5 suffix
        # h5py can crash the process (a segfault on close) when the disk fills up under it: check
        # first that the weights fit, with room for HDF5's per-dataset headers.
        needed = sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) + 4096 for v in model.weights) + 65536
        if shutil.disk_usage(path.parent).free < needed:
            raise NmtError(f"no space left on device while writing {path} (it needs about {needed / 2**20:.1f} MiB)")
        try:
            with writing(path):
                model.save_weights(tmp)
        except NmtError:
            tmp.unlink(missing_ok=True)  # the best weights before stay as they were
            raise
        os.replace(tmp, path)

    def final_evaluation(self, data: PreparedData | None = None) -> Any:
        """The task's final dev scores of the best weights (BLEU with the configured beam, or
        perplexity), stored in metrics.jsonl and returned; None without a dev set."""
        from nmt.inference import load

        if self.config.data.dev is None:
            return None
        if data is None:
            data = self.task.prepare_data(self.run)
        record, scores = self.task.final_scores(load(self.run_dir), data)
        self.run.append_metrics(record)
        return scores
