"""The run directory: its layout (:class:`RunDir`, the one place that names its files) and its
safety rules: one trainer at a time (an advisory lock), starting over only when asked, writes
that a full disk cannot leave half-done, and the checkpoint to resume from."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.errors import NmtError
from nmt.io import atomic_write_text, is_disk_full

if TYPE_CHECKING:
    from nmt.config import Config

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Everything a trained model is, in one folder; training writes it, everything else reads it::

        config.yaml    the resolved config       spm/           SentencePiece models
        checkpoints/   latest states (resume)    best/          weights chosen on dev
        cache/         tokenized corpora         metrics.jsonl  one line per evaluation
        data_checks.json   the dev set's overlap with the training data, counted before the first step
        logs/          TensorBoard               .lock          held by the one trainer at work here
        averaged/      the mean of the last checkpoints (nmt average, train.average_last)
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    config_file = property(lambda self: self.path / "config.yaml")
    spm = property(lambda self: self.path / "spm")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best_weights = property(lambda self: self.path / "best" / "model.weights.h5")
    averaged_weights = property(lambda self: self.path / "averaged" / "model.weights.h5")
    cache = property(lambda self: self.path / "cache")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    data_checks = property(lambda self: self.path / "data_checks.json")  # what nmt train found in its data
    logs = property(lambda self: self.path / "logs")
    lock = property(lambda self: self.path / ".lock")
    curves = property(lambda self: self.path / "curves.png")  # nmt report's default picture

    # What --restart deletes: the training progress (tokenizers and the token cache do not depend on it).
    progress = property(lambda self: (self.checkpoints, self.best_weights.parent, self.averaged_weights.parent,
                                      self.logs, self.metrics))

    def read_config(self) -> Config:
        from nmt.run_config import read_run_config

        return read_run_config(self.path)

    def save_config(self, config: Config) -> None:
        from nmt.run_config import save_config

        save_config(config, self.config_file)

    def save_data_checks(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.data_checks, json.dumps(record, indent=1) + "\n")

    def read_data_checks(self) -> dict[str, Any] | None:
        """What :meth:`save_data_checks` wrote; None for a run trained before it was counted (or without dev)."""
        try:
            return json.loads(self.data_checks.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise NmtError(f"{self.data_checks}: not JSON ({error})") from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One JSON line in metrics.jsonl, whole or (disk full) not at all."""
        append_line(self.metrics, json.dumps(record))


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """One trainer per run directory: an advisory lock on ``run_dir/.lock``, which records the
    holder's pid. The kernel drops the lock when its process ends, however it ends, so a killed
    trainer cannot leave it stuck."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(RunDir(run_dir).lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            by = f"another process (pid {holder})" if holder.isdigit() else "another process"
            raise NmtError(f"{run_dir} is being trained by {by}: wait for it to finish or stop it, "
                           "or give another run_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # closing the file releases the lock


def start_over(run_dir: Path) -> None:
    """``nmt train --restart``: deletes the run's training progress (checkpoints, best and averaged
    weights, metrics, TensorBoard logs); the tokenizers and the token cache stay, they do not depend on it."""
    removed = []
    for path in RunDir(run_dir).progress:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    if removed:
        logger.warning("--restart: removed %s from %s; training starts at step 0", ", ".join(removed), run_dir)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A full disk while writing ``path`` becomes a one-line NmtError (the writers below leave
    what was on disk before as it was)."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.OpError, OSError, RuntimeError) as error:
        if is_disk_full(error):
            raise NmtError(f"no space left on device while writing {path}") from None
        raise


def append_line(path: Path, line: str) -> None:
    """Appends one line to ``path``, all of it or (disk full) none of it."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            except OSError:
                os.ftruncate(fd, start)  # never half a record
                raise
        finally:
            os.close(fd)


def _state_file_latest(directory: Path) -> str | None:
    """The checkpoint that TensorFlow's state file names (a bare name), or None if it names none."""
    import tensorflow as tf

    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except Exception:  # noqa: BLE001 - an unreadable state file is what is being repaired
        return None
    return Path(state.model_checkpoint_path).name if state and state.model_checkpoint_path else None


def resume_point(directory: Path, chief: bool) -> Path | None:
    """The checkpoint to resume from: the newest one in ``directory`` that reads back whole, found
    from the files (TensorFlow's ``checkpoint`` state file can be garbage, a checkpoint's data
    damaged). The chief removes half-written saves and rewrites a state file that names another
    checkpoint, so that the CheckpointManager keeps and deletes the right ones. None: no checkpoint
    at all; NmtError: there are checkpoints but none is intact (never start over silently)."""
    import tensorflow as tf

    from nmt.checkpoints import checkpoint_prefixes, checkpoint_problem, newest_intact, remove_partial_saves

    if chief:
        for partial in remove_partial_saves(directory):
            logger.warning("removed %s, left by a checkpoint save that did not finish", partial)
    prefixes = checkpoint_prefixes(directory)
    if not prefixes:
        return None
    latest = newest_intact(directory)
    if latest is None:
        problems = "; ".join(f"{prefix}: {checkpoint_problem(prefix)}" for prefix in prefixes)
        raise NmtError(f"no intact checkpoint to resume from in {directory} ({problems}); restore the files from a "
                       "backup, or run nmt train --restart to start over (deletes the checkpoints, best and "
                       "averaged weights and metrics)")
    named = _state_file_latest(directory)
    if chief and named != latest.name:
        number = int(latest.name.split("-")[1])
        kept = [p for p in reversed(prefixes) if int(p.name.split("-")[1]) <= number]  # oldest first
        times = [p.with_name(p.name + ".index").stat().st_mtime for p in kept]
        tf_logger = tf.get_logger()
        level = tf_logger.level
        tf_logger.setLevel(logging.ERROR)  # update_checkpoint_state's deprecation notice
        try:
            with writing(directory / "checkpoint"):
                tf.compat.v1.train.update_checkpoint_state(
                    str(directory), latest.name, all_model_checkpoint_paths=[p.name for p in kept],
                    all_model_checkpoint_timestamps=times,
                    # The manager deletes (keep-N) only checkpoints newer than this.
                    last_preserved_timestamp=min(times) - 1.0,
                )
        finally:
            tf_logger.setLevel(level)
        logger.warning("%s named %s; resuming from %s, the newest intact checkpoint (state file rewritten)",
                       directory / "checkpoint", named or "no readable checkpoint", latest)
    return latest
