"""Finding the checkpoint to resume from, or to load, from the files themselves (and repairing
TensorFlow's state file to match); writing a weights file (best/, averaged/) whole or not at all.

TensorFlow's ``checkpoint`` state file names the latest checkpoint, but it can be garbage (a
killed writer, a careless edit) and a ``ckpt-N.data-*`` file can be truncated or overwritten while
its ``.index`` survives. Trusting either gives a silent restart from step 0 or a traceback. Here a
checkpoint counts only if every tensor it lists reads back with its checksum; the newest such one is
chosen, and each bad one on the way is logged by name.

Example::

    from nmt.checkpoints import newest_intact
    prefix = newest_intact("runs/en-ja/checkpoints")   # Path("…/ckpt-9000") or None
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from nmt.errors import NmtError
from nmt.io import atomic_path, writing

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"ckpt-(\d+)\.index")


def checkpoint_prefixes(directory: str | Path) -> list[Path]:
    """Every ``ckpt-N`` with an ``.index`` file in ``directory``, newest (highest N) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    numbered = [(int(m.group(1)), directory / f"ckpt-{m.group(1)}")
                for m in (_NUMBERED.fullmatch(p.name) for p in directory.iterdir()) if m]
    return [prefix for _, prefix in sorted(numbered, reverse=True)]


def checkpoint_problem(prefix: str | Path) -> str | None:
    """Why the checkpoint at ``prefix`` cannot be read (a one-line reason), or None if every
    tensor it lists reads back intact."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype == tf.variant:
                # A data iterator's state: not convertible to numpy, so read it with the restore
                # op itself (which checks its checksum as it reads).
                tf.raw_ops.RestoreV2(prefix=str(prefix), tensor_names=[name], shape_and_slices=[""],
                                     dtypes=[tf.variant])
            else:
                reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - TF raises many types for damaged files; each is a "no"
        message = str(error).strip().splitlines()
        return message[0] if message else type(error).__name__
    return None


def newest_intact(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory`` that reads back whole; the damaged ones passed over
    on the way are logged as warnings naming their files. None if there is no intact one."""
    for prefix in checkpoint_prefixes(directory):
        problem = checkpoint_problem(prefix)
        if problem is None:
            return prefix
        log.warning("checkpoint %s is damaged (%s); trying the one before it", prefix, problem)
    return None


def remove_partial_saves(directory: str | Path) -> list[Path]:
    """Deletes the ``*_temp`` folders that a save killed midway leaves behind; returns them."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for partial in directory.glob("*_temp*"):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial)
    return removed


def save_weights(model: Any, path: Path) -> None:
    """The Keras model's weights to ``path`` (``*.weights.h5``), all of them or, on a full disk, an
    NmtError naming ``path`` and the file before left as it was."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    # h5py can crash the process (a segfault on close) when the disk fills up under it: check
    # first that the weights fit, with room for HDF5's per-dataset headers.
    needed = sum(np.dtype(v.dtype).itemsize * int(np.prod(v.shape)) + 4096 for v in model.weights) + 65536
    if shutil.disk_usage(path.parent).free < needed:
        raise NmtError(f"no space left on device while writing {path} (it needs about {needed / 2**20:.1f} MiB)")
    with writing(path), atomic_path(path, suffix=".weights.h5") as tmp:  # Keras wants the suffix
        model.save_weights(tmp)


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

    if chief:
        for partial in remove_partial_saves(directory):
            log.warning("removed %s, left by a checkpoint save that did not finish", partial)
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
        log.warning("%s named %s; resuming from %s, the newest intact checkpoint (state file rewritten)",
                    directory / "checkpoint", named or "no readable checkpoint", latest)
    return latest
