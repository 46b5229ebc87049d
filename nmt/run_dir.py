"""The run directory: its layout (:class:`RunDir`, the one place that names its files) and its
safety rules: one trainer at a time (an advisory lock), starting over only when asked, writes
that a full disk cannot leave half-done, and the checks on resuming a run or starting from one."""

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
from nmt.io import append_line, atomic_write_text
from nmt.run_config import check_compatible, check_same_architecture, read_config_file, read_config_tree, save_config

if TYPE_CHECKING:
    from nmt.config import Config

logger = logging.getLogger(__name__)


SHORTLIST_TABLE = "table.npz"  # in shortlist/, beside meta.json


@dataclasses.dataclass(frozen=True)
class RunDir:
    """Everything a trained model is, in one folder; training writes it, everything else reads it::

        config.yaml    the resolved config       spm/           SentencePiece models
        checkpoints/   latest states (resume)    best/          weights chosen on dev
        cache/         tokenized corpora         metrics.jsonl  one line per evaluation
        data_checks.json   the dev set's overlap with the training data, counted before the first step
        logs/          TensorBoard               .lock          held by the one trainer at work here
        averaged/      the mean of the last checkpoints (nmt average, train.average_last)
        shortlist/     the vocabulary shortlist (nmt shortlist; decode.shortlist)
        lexicon.txt    the words a keyboard's suggest may offer (nmt lexicon; language models)
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
    shortlist = property(lambda self: self.path / "shortlist")  # nmt shortlist: the vocabulary shortlist
    shortlist_table = property(lambda self: self.shortlist / SHORTLIST_TABLE)
    lexicon = property(lambda self: self.path / "lexicon.txt")  # nmt lexicon: the words suggest may offer

    # What --restart deletes: the training progress (tokenizers and the token cache do not depend on it).
    progress = property(lambda self: (self.checkpoints, self.best_weights.parent, self.averaged_weights.parent,
                                      self.logs, self.metrics))

    def read_config(self) -> Config:
        """The config stored with the run (no TensorFlow needed: the CLI checks a run before loading it)."""
        if not self.config_file.is_file():
            raise NmtError(f"{self} is not a run directory: {self.config_file.name} is missing "
                           "(train one with `nmt train`)")
        return read_config_file(self.config_file)

    def save_config(self, config: Config) -> None:
        save_config(config, self.config_file)

    def check_resumable(self, config: Config, carries_state: bool) -> None:
        """Refuses to go on training this run with ``config`` where what is built (the tokenizers,
        the checkpoints) would not fit it; a run with no stored config yet takes any."""
        if not self.config_file.is_file():
            return
        check_compatible(str(self), read_config_tree(self.config_file), config, tokenizer_built=self.spm.is_dir(),
                         model_built=self.checkpoints.is_dir(), carries_state=carries_state)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The dev evaluations (``metrics.jsonl``), one per step, later lines winning (a resumed run
        re-evaluates steps it had done before the interruption); the final evaluation is not among them."""
        if not self.metrics.is_file():
            raise NmtError(f"{self}: no metrics.jsonl yet (it is written at each dev evaluation of `nmt train`)")
        by_step: dict[int, dict[str, Any]] = {}
        for number, line in enumerate(self.metrics.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise NmtError(f"{self.metrics}:{number}: not JSON ({error.msg})") from None
            if "step" in record and not record.get("final"):
                by_step[int(record["step"])] = record
        return [by_step[s] for s in sorted(by_step)]

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


def init_source(config: Config) -> Config | None:
    """The config of the run that ``train.init_from`` names (None when it names none), checked: it
    must be a trained run of the same task, model and tokenizer settings (dropout may differ); a
    difference is an NmtError naming every differing key. Needs no TensorFlow."""
    source = config.train.init_from
    if source is None:
        return None
    try:
        stored = RunDir(Path(source).expanduser()).read_config()
        check_same_architecture(source, stored, config)
    except NmtError as error:
        raise NmtError(f"train.init_from: {error}") from None
    return stored
