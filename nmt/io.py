"""Atomic file writes: a reader sees the old file or the new one, never half of one; an appended
line is whole or absent; a full disk is an error that names the file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from nmt.errors import NmtError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary file's path in the target's folder, for a writer that wants a file name
    (Keras wants its weights files to end in ``.weights.h5``: give that as ``suffix``); synced to
    disk and renamed over ``path`` only if the block succeeds, deleted if not.

    Errors name ``path`` as given, never the temporary file: a full disk is ``OSError(ENOSPC)`` with
    ``filename`` ``path``, an existing directory at ``path`` is ``IsADirectoryError`` before anything is
    written."""
    shown = os.fspath(path)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", shown)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as error:
        raise _naming(error, shown) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the result should look like any new file
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename in (None, tmp):  # not another file's error
            raise _naming(error, shown) from None
        raise


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yields a file in the target's folder; renames it over ``path`` only if the block succeeds
    (see :func:`atomic_path`, which names errors the same way)."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle


def is_disk_full(error: BaseException) -> bool:
    """The one test for "the disk is full": Python's ENOSPC/EDQUOT, or TensorFlow's and h5py's errors,
    which carry the C library's text rather than an errno."""
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


def _naming(error: OSError, shown: str) -> OSError:
    """``error`` with the target's path as its file name (the temporary file means nothing to a user)."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or os.strerror(error.errno), shown)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_writer(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A full disk while writing ``path`` becomes a one-line NmtError naming it (TensorFlow and
    Keras report it as an OpError or RuntimeError with a stack listing); the writer is expected to
    leave what was on disk before as it was."""
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
