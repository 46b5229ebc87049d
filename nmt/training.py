"""Training: the run's task prepares data and builds the model; this module trains it, resumably,
with dev evaluation (:class:`nmt.evaluator.Evaluator`: best-model selection, early stopping), into one run directory
(:class:`nmt.run_dir.RunDir`), for ``train.steps`` or a time budget (``train.time_budget``), from
scratch or from another run's weights (``train.init_from``).

A resume starts from the newest checkpoint whose files read back whole (TensorFlow's state file
is repaired if it names another); a full disk, a second trainer or a diverging loss stop training
with a one-line NmtError and leave the files as they were before. Progress is logged (logger
``nmt.training``); the CLI decides what reaches the terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nmt.checkpoints import checkpoint_prefixes, resume_point
from nmt.config import Config
from nmt.config_fields import duration_seconds
from nmt.distribute import from_chief, is_chief, make_strategy, worker_dir
from nmt.errors import NmtError
from nmt.evaluator import Evaluator
from nmt.inference import load_weights
from nmt.io import atomic_write_bytes
from nmt.run_dir import RunDir, hold_run_dir, init_source, start_over
from nmt.schedule import LearningRate, TrainingTime
from nmt.tasks import PreparedData, Task, task_for
from nmt.train_step import make_dev_loss, make_train_step
from nmt.training_state import TrainingState, save_checkpoint

log = logging.getLogger(__name__)

# Called every 20 steps and at the last with (step, total steps, {"loss", "tok/s", "lr"}); without
# one, a log line every 100 steps. Under a time budget the total is the step expected at its end.
Progress = Callable[[int, int, dict[str, float]], None]


OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}  # by train.optimizer


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
        self.evaluator = Evaluator(self.task, self.run, config.train)

    def train(self) -> Any:
        """Trains to ``train.steps`` or the end of ``train.time_budget``, whichever comes first (or
        early stopping), averages the last checkpoints where ``train.average_last`` asks, then scores
        the best weights on dev: the final scores (BLEU or perplexity), or None without a dev set or
        on a non-chief worker."""
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
        self.run.check_resumable(config, self.task.carries_state)
        # train.init_from binds when a run starts; a run with checkpoints resumes from its own.
        starting_from = not checkpoint_prefixes(self.run.checkpoints) and init_source(config) is not None
        work.path.mkdir(parents=True, exist_ok=True)
        if chief:
            self.run.save_config(config)
        if starting_from:
            self._copy_tokenizers(work)
        keras.utils.set_random_seed(config.seed)
        data = self.task.prepare_data(work)
        if chief and data.dev_overlap is not None:
            self.run.save_data_checks({"dev_overlap": data.dev_overlap.to_dict()})
        vocab = data.target_tokenizer.vocab_size  # tokenizer.vocab_size is an upper bound (char, word models)
        if cfg.sampled_softmax is not None and cfg.sampled_softmax >= vocab:
            raise NmtError(f"train.sampled_softmax: {cfg.sampled_softmax} samples is not fewer than the {vocab} "
                           "tokens of the trained vocabulary; use the full softmax (null)")
        if strategy.num_replicas_in_sync > 1:
            self._check_workers_agree(strategy, work, data)
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(cfg.precision)
        try:
            with strategy.scope():
                model = self.task.build_model(data.source_tokenizer.vocab_size, data.target_tokenizer.vocab_size)
                schedule = LearningRate(cfg.learning_rate, cfg.warmup_steps, cfg.decay, cfg.steps)
                optimizer = OPTIMIZERS[cfg.optimizer](learning_rate=schedule)
                if cfg.precision == "mixed_float16":
                    # float16 gradients underflow: the loss is scaled up, and steps with inf/NaN
                    # gradients are skipped while the scale adapts.
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
                optimizer.build(model.trainable_variables)
                if starting_from:
                    load_weights(model, self._source_run, "best")
                    log.info("starting from the best weights and the tokenizers of %s (train.init_from)",
                             cfg.init_from)
            self._train_loop(strategy, model, optimizer, schedule, data, work)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        if not chief:
            return None
        if cfg.average_last is not None:
            self._average_last()
        return self.final_evaluation(data)

    @property
    def _source_run(self) -> RunDir:
        return RunDir(Path(str(self.config.train.init_from)).expanduser())

    def _copy_tokenizers(self, work: RunDir) -> None:
        """train.init_from: the source run's SentencePiece models become this run's (its vocabulary
        is kept: the weights index it). The tokenizer settings are the same (init_source checked)."""
        for source_file, own_file in zip(self.task.tokenizer_files(self._source_run), self.task.tokenizer_files(work)):
            if not source_file.is_file():
                raise NmtError(f"train.init_from: {self.config.train.init_from} has no tokenizer {source_file}")
            model = source_file.read_bytes()
            if not own_file.is_file() or own_file.read_bytes() != model:
                atomic_write_bytes(own_file, model)

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
        manager = state.manager(save_dir, self.config.train.keep_checkpoints)
        if latest:
            state.restore(latest)
            log.info("resumed from %s at step %d", latest, state.step)
        if strategy.num_replicas_in_sync > 1 and from_chief(strategy, state.step) != state.step:
            raise NmtError(f"this worker resumed at step {state.step}, not at the chief's: it cannot read "
                           f"the chief's checkpoints in {self.run.checkpoints} (put run_dir on a shared filesystem)")
        return manager

    def _training_time(self, strategy: tf.distribute.Strategy, state: TrainingState, schedule: LearningRate
                       ) -> TrainingTime:
        """The run's clock, from the time its checkpoint says was spent; under a time budget the
        schedule's horizon is set from the step rate of the earlier sessions (until this one's is measured)."""
        cfg = self.config.train
        budget = duration_seconds(cfg.time_budget) if cfg.time_budget is not None else None
        clock = TrainingTime(budget, cfg.steps, state.step, float(state.seconds))
        if budget is not None:
            schedule.horizon.assign(float(_chiefs(strategy, clock.horizon(state.step))))
            log.info("time budget %s: %.0f of %.0f s spent; training stops when it ends or at step %d, whichever "
                     "comes first", cfg.time_budget, clock.spent_before, budget, cfg.steps)
        return clock

    def _train_loop(self, strategy, model, optimizer, schedule, data: PreparedData, work: RunDir) -> None:
        cfg, chief = self.config.train, is_chief(strategy)
        parameters = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        log.info("model: %.2fM parameters (%s)%s%s", parameters / 1e6, f"{parameters:,}",
                 f", {cfg.precision}" if cfg.precision != "float32" else "", ", XLA" if cfg.jit_compile else "")
        # Every worker reads the same global batches (same data, same seed); a plain iterator is
        # checkpointable, which a distributed one is not. TBPTT: the state at the end of one batch
        # starts the next (row r continues row r).
        carried = tf.nest.map_structure(lambda t: tf.Variable(tf.cast(t, tf.float32), trainable=False),
                                        model.initial_state(cfg.batch_size) if self.task.carries_state else {})
        state = TrainingState(model, optimizer, iter(self.task.training_dataset(data.train)), carried)
        manager = self._resume(strategy, state, work)
        train_step = make_train_step(strategy, model, optimizer, cfg, carried, state.losses,
                                     (state.report_window, state.eval_window), seed=self.config.seed)
        dev_loss = make_dev_loss(model, data.dev) if data.dev is not None else None
        predictor = self.task.predictor(model, data.source_tokenizer, data.target_tokenizer)
        writer = tf.summary.create_file_writer(str(self.run.logs)) if chief else tf.summary.create_noop_writer()
        step = state.step
        clock = self._training_time(strategy, state, schedule)
        total = int(schedule.horizon.numpy())  # the last step, as far as it is known
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        window_tokens, window_start = 0.0, time.perf_counter()
        stopped_early = self.evaluator.stops_early(state)
        # A new run trains at least one step, whatever its budget: a run without weights is no run.
        out_of_time = step > 0 and clock.budget is not None and bool(_chiefs(strategy, int(clock.over())))
        if stopped_early:
            log.info("this run stopped early at step %d; raise train.early_stopping to train on", step)
        if out_of_time:
            log.info("this run spent its time budget (%s) at step %d; raise train.time_budget to train on",
                     cfg.time_budget, step)
        while step < cfg.steps and not stopped_early and not out_of_time:
            loss, norm, tokens, _ = train_step(next(state.iterator))
            step += 1
            # Float16 loss scaling skips steps with inf gradients itself; a non-finite loss, or
            # gradient norm in float32, means the weights are (about to be) NaN: stop, save nothing.
            if not math.isfinite(float(loss)) or (not loss_scaled and not math.isfinite(float(norm))):
                raise self._diverged(step, float(loss), float(norm), manager)
            window_tokens += float(tokens)
            if clock.budget is not None:
                # Every worker stops at the chief's step (a collective each step, under a time
                # budget on more than one replica only).
                out_of_time = bool(_chiefs(strategy, int(clock.over())))
            last = step == cfg.steps or out_of_time
            if step % 20 == 0 or last:
                rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                self._report(step, step if last else total, state, rate, float(schedule(step - 1)), float(norm),
                             writer)
                window_tokens, window_start = 0.0, time.perf_counter()
            saving = step % cfg.checkpoint_every == 0 or last
            if (saving or step % cfg.eval_every == 0) and not _weights_finite(model):
                raise self._diverged(step, float(loss), float(norm), manager)
            if step % cfg.eval_every == 0 or last:
                # Dev scores once, by the chief; the others wait for its verdict on early stopping.
                if chief:
                    stopped_early = self.evaluator.evaluation_point(step, predictor, data, dev_loss, state, writer,
                                                                    clock.spent())
                if strategy.num_replicas_in_sync > 1:
                    stopped_early = bool(from_chief(strategy, int(stopped_early)))
                state.eval_window.reset()  # on every worker: the checkpoint holds it
                window_tokens, window_start = 0.0, time.perf_counter()  # evaluation is not training time
            if saving or stopped_early:
                state.seconds.assign(clock.spent())
                save_checkpoint(manager, step, keep_files=chief)
            if stopped_early:
                log.info("early stopping at step %d: no dev improvement in %d evaluations", step, cfg.early_stopping)
            if clock.budget is not None and not last:
                # The step expected when the budget ends, from the rate so far (this step's
                # evaluation and checkpoint included): the next step's learning rate decays towards
                # it, over the chief's estimate on every worker.
                total = _chiefs(strategy, clock.horizon(step))
                schedule.horizon.assign(float(total))
        if out_of_time and step > clock.start_step:
            log.info("time budget %s spent at step %d (%.0f s of training)", cfg.time_budget, step, clock.spent())

    def _report(self, step: int, total: int, state: TrainingState, rate: float, lr: float, norm: float,
                writer: Any) -> None:
        """The figures of the last 20 steps: to the progress callback (or a log line every 100
        steps) and to TensorBoard, with the last step's gradient norm (before clipping), the
        fraction of the 20 steps that were clipped and each layer's mean gradient norm
        (``gradients/<layer>``). ``lr`` is the rate the last step's update used; ``total`` the
        last step as far as it is known (under a time budget, an estimate)."""
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

    def _average_last(self) -> None:
        """train.average_last: the last N checkpoints averaged (fewer, with a warning, when the run
        has not saved N); best/ keeps whichever scores higher."""
        from nmt.averaging import average_checkpoints

        wanted = self.config.train.average_last
        kept = len(checkpoint_prefixes(self.run.checkpoints))
        if kept < wanted:
            log.warning("train.average_last is %d, but this run has saved %d checkpoint(s): averaging those",
                        wanted, kept)
        average_checkpoints(self.run_dir, min(wanted, kept))

    def final_evaluation(self, data: PreparedData | None = None) -> Any:
        """The task's final dev scores of the best weights (BLEU with the configured beam, or
        perplexity), stored in metrics.jsonl and returned; None without a dev set."""
        from nmt.inference import load

        if self.config.data.dev is None:
            return None
        if data is None:
            data = self.task.prepare_data(self.run)
        return self.evaluator.final(load(self.run_dir), data)


def _chiefs(strategy: tf.distribute.Strategy, value: int) -> int:
    """``value`` as the chief has it: with one replica, this process's own."""
    return from_chief(strategy, value) if strategy.num_replicas_in_sync > 1 else value
