"""Checkpoint averaging: the element-wise mean of the weights of a run's last N checkpoints, written
to ``averaged/model.weights.h5`` (``--weights averaged``). The mean of the last points of a
training run often scores higher than any one of them (Vaswani et al. 2017, Popel & Bojar 2018);
so that ``translate``, ``export`` and the rest use it by default, ``best/`` then holds whichever of
the averaged and the best weights scores higher on dev, by the measure that selects the best
weights during training.

Example::

    from nmt.averaging import average_checkpoints
    result = average_checkpoints("runs/en-ja", last=3)
    result.checkpoints, result.chosen          # ['ckpt-8000', 'ckpt-8500', 'ckpt-9000'], True
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from nmt.checkpoints import checkpoint_prefixes, checkpoint_problem, save_weights
from nmt.errors import NmtError
from nmt.evaluator import Evaluator
from nmt.inference import load, load_weights, read_checkpoint
from nmt.io import atomic_path, writing
from nmt.run_dir import RunDir
from nmt.tasks import task_for
from nmt.train_step import make_dev_loss

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Averaged:
    """What :func:`average_checkpoints` did: the file written, the checkpoints averaged (oldest
    first), the dev score of the averaged and of the best weights as the task describes it
    (``dev BLEU 31.20``; None without a dev set) and whether ``best/`` now holds the averaged weights."""

    path: Path
    checkpoints: list[str]
    averaged_score: str | None
    best_score: str | None
    chosen: bool

    def summary(self) -> str:
        """One line for the terminal."""
        line = f"averaged {', '.join(self.checkpoints)} into {self.path}"
        if self.averaged_score is None:
            return line + " (no dev set: best/ left as it was; use --weights averaged)"
        return (f"{line}; averaged: {self.averaged_score}, best: {self.best_score}; "
                + ("best/ now holds the averaged weights" if self.chosen else "best/ kept"))


def last_checkpoints(run: RunDir, last: int) -> list[Path]:
    """The newest ``last`` checkpoints, oldest first; NmtError naming the folder when it keeps
    fewer, or the checkpoint when one of them is damaged."""
    kept = checkpoint_prefixes(run.checkpoints)
    names = ", ".join(p.name for p in reversed(kept)) or "none"
    if len(kept) < last:
        raise NmtError(f"{run.checkpoints} keeps {len(kept)} checkpoint(s) ({names}): cannot average the last "
                       f"{last}; give a smaller --last (train.keep_checkpoints sets how many are kept)")
    chosen = list(reversed(kept[:last]))
    for prefix in chosen:
        problem = checkpoint_problem(prefix)
        if problem is not None:
            raise NmtError(f"checkpoint {prefix} is damaged ({problem}); average fewer (--last) or other "
                           f"checkpoints (kept: {names})")
    return chosen


def average_checkpoints(run_dir: str | Path, last: int) -> Averaged:
    """Writes the mean of the weights of ``run_dir``'s last ``last`` checkpoints to
    ``averaged/model.weights.h5``; with a dev set, scores it and the best weights on dev and puts
    the higher into ``best/``, recorded in metrics.jsonl. The caller makes sure no trainer writes
    the run meanwhile (``nmt average`` holds its lock; the trainer calls this itself)."""
    if last < 1:
        raise NmtError(f"--last must be at least 1, got {last}")
    run = RunDir(Path(run_dir))
    prefixes = last_checkpoints(run, last)
    predictor = load(run.path, weights=prefixes[-1].name)
    model = predictor.model
    # The sum in float64: the mean of N float32 tensors, rounded once.
    sums = [np.zeros(v.shape, np.float64) for v in model.weights]
    for prefix in prefixes:
        read_checkpoint(model, prefix)
        for total, variable in zip(sums, model.weights):
            total += np.asarray(variable.numpy(), np.float64)
    for total, variable in zip(sums, model.weights):
        variable.assign((total / len(prefixes)).astype(variable.numpy().dtype))
    save_weights(model, run.averaged_weights)
    names = [p.name for p in prefixes]
    log.info("averaged the weights of %s into %s", ", ".join(names), run.averaged_weights)
    config = predictor.config
    if config.data.dev is None:
        log.info("no dev set to compare the averaged weights with the best: best/ is left as it was")
        return Averaged(run.averaged_weights, names, None, None, False)

    task = task_for(config)
    data = task.dev_data(*task.load_tokenizers(run))
    dev_loss = make_dev_loss(model, data.dev) if data.dev is not None else None

    evaluator = Evaluator(task, run, config.train)
    averaged = evaluator.scores(predictor, data, dev_loss)  # the model holds the averaged weights
    load_weights(model, run, "best")
    best = evaluator.scores(predictor, data, dev_loss)
    averaged_described, best_described = evaluator.describe(averaged), evaluator.describe(best)
    chosen = evaluator.better(averaged, than=best)
    if chosen:
        with writing(run.best_weights), atomic_path(run.best_weights, suffix=".weights.h5") as tmp:
            shutil.copyfile(run.averaged_weights, tmp)
    log.info("dev: averaged weights %s, best weights %s: best/ %s", averaged_described, best_described,
             "now holds the averaged weights" if chosen else "kept")
    run.append_metrics({"averaged": names, "time": time.time(), "best_now": "averaged" if chosen else "best",
                        **{f"averaged_{k}": v for k, v in averaged.items()},
                        **{f"best_{k}": v for k, v in best.items()}})
    return Averaged(run.averaged_weights, names, averaged_described, best_described, chosen)
