"""Dev evaluation for training and averaging: the task's dev scores, their record (metrics.jsonl,
TensorBoard), best-model selection, early stopping and the final evaluation of the best weights.
The task says what its scores are and which is better; this module does the bookkeeping the same
way for every task."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from nmt.checkpoints import save_weights
from nmt.config import TrainConfig
from nmt.run_dir import RunDir
from nmt.tasks import PreparedData, Task
from nmt.train_stats import TRAIN_LOSS_WINDOW
from nmt.training_state import TrainingState

log = logging.getLogger(__name__)

# Fields of a dev record that the log line leaves out (bookkeeping, or too long for one line).
_NOT_SHOWN = ("step", "time", "train_seconds", "gradient_norm_max", "layer_gradient_norms")


class Evaluator:
    """Scores ``task``'s predictor on dev and keeps ``run``'s best weights, by ``train``'s rules
    (``eval_max_sentences``, ``early_stopping``)."""

    def __init__(self, task: Task, run: RunDir, train: TrainConfig) -> None:
        self.task, self.run, self.train = task, run, train

    def scores(self, predictor: Any, data: PreparedData, dev_loss: Callable[[], float] | None) -> dict[str, Any]:
        """The task's dev record of the predictor's current weights ({} without a dev set)."""
        return self.task.dev_scores(predictor, data, dev_loss, self.train.eval_max_sentences)

    def better(self, scores: dict[str, Any], than: dict[str, Any]) -> bool:
        """Whether the weights that scored ``scores`` are better than those that scored ``than``."""
        return self.task.quality(scores)[0] > self.task.quality(than)[0]

    def describe(self, scores: dict[str, Any]) -> str:
        return self.task.quality(scores)[1]

    def stops_early(self, state: TrainingState) -> bool:
        """Whether the run's dev record says training is over (``train.early_stopping`` evaluations
        without improvement)."""
        patience = self.train.early_stopping
        return patience is not None and int(state.stale_evals) >= patience

    def evaluation_point(self, step: int, predictor: Any, data: PreparedData, dev_loss: Callable[[], float] | None,
                         state: TrainingState, writer: Any, seconds: float) -> bool:
        """Scores dev at ``step``, records it (with the ``seconds`` spent training so far and the
        training figures since the last evaluation), keeps the best weights; True when early
        stopping ends training."""
        result = self.scores(predictor, data, dev_loss)
        record = {"step": step, "time": time.time(), "train_seconds": round(seconds, 3),
                  "train_loss": state.losses.mean(TRAIN_LOSS_WINDOW),
                  **state.eval_window.summary(state.gradient_groups), **result}
        self.run.append_metrics(record)
        with writer.as_default(step=step):
            for key in self.task.dev_scalars:
                if key in result:
                    tf.summary.scalar(f"dev/{key.removeprefix('dev_')}", result[key])
        log.info("\nstep %d: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k not in _NOT_SHOWN))
        if "dev_loss" not in result:
            # Without a dev set the latest weights are the best we know of; the dev record
            # (best_score, stale_evals) is left alone so that a later run with a dev set starts clean.
            save_weights(state.model, self.run.best_weights)
            return False
        quality, described = self.task.quality(result)
        if quality > float(state.best_score):
            state.best_score.assign(quality)
            state.stale_evals.assign(0)
            save_weights(state.model, self.run.best_weights)
            log.info("new best model (%s) saved to %s", described, self.run.best_weights)
            return False
        state.stale_evals.assign_add(1)
        return self.stops_early(state)

    def final(self, predictor: Any, data: PreparedData) -> Any:
        """The task's final dev scores of ``predictor`` (the best weights: BLEU with the configured
        beam, or perplexity), stored in metrics.jsonl and returned."""
        record, scores = self.task.final_scores(predictor, data)
        self.run.append_metrics(record)
        return scores
