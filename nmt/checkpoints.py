"""Finding the checkpoint to resume from, or to load, from the files themselves; writing a
weights file (best/, averaged/) whole or not at all.

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
from nmt.io import atomic_path
from nmt.run_dir import writing

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
