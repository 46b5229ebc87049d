"""Fault injection for tests: damage a file, fill a small disk, kill a process at a moment, and run
the real ``nmt`` command. Used by the reliability tests of every module; no test-specific logic here.

    from faults import scramble, small_disk, kill_when, run_nmt
    scramble(run / "checkpoints" / "ckpt-20.data-00000-of-00001")
    with small_disk(tmp_path, kib=64) as disk: ...          # a tmpfs; skips where mounting is refused
    process = start_nmt(["train", "--config", str(cfg)])
    kill_when(process, lambda: (run / "checkpoints").is_dir())
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def truncate(path: str | Path, keep: float = 0.5) -> None:
    """Cuts ``path`` to ``keep`` of its size (a write that stopped midway)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep))


def scramble(path: str | Path, count: int = 256, seed: int = 0) -> None:
    """Overwrites ``count`` bytes in the middle of ``path`` with random bytes (same size: a bad disk
    block, not a short write)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    start = max(0, len(data) // 2 - count // 2)
    for i in range(start, min(len(data), start + count)):
        data[i] = (data[i] + 1 + rng.randrange(255)) % 256  # always a different byte
    path.write_bytes(bytes(data))


def replace_with(path: str | Path, content: bytes | str) -> None:
    """Replaces the whole file (a careless edit, a foreign file under the expected name)."""
    Path(path).write_bytes(content.encode() if isinstance(content, str) else content)


@contextlib.contextmanager
def small_disk(tmp_path: Path, kib: int = 64) -> Iterator[Path]:
    """A tmpfs of ``kib`` KiB mounted under ``tmp_path``; skips the test where mounting is not
    allowed (not root, no mount namespace). Unmounted afterwards."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fills the filesystem of ``folder`` up to ``leave`` free bytes with one file; returns it."""
    filler = folder / ".filler"
    with open(filler, "wb") as handle:
        chunk = b"\0" * 4096
        with contextlib.suppress(OSError):
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave + len(chunk):
                handle.write(chunk)
                handle.flush()
    return filler


def nmt_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "nmt.cli", *map(str, args)]


def run_nmt(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """The real ``nmt`` command in a subprocess: returncode, stdout and stderr as text."""
    return subprocess.run(nmt_command(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)


def start_nmt(args: list[str], **kwargs) -> subprocess.Popen:
    """The real ``nmt`` command, started and left running (stdout and stderr piped as text)."""
    return subprocess.Popen(nmt_command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            **kwargs)


def kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300,
              sig: int = signal.SIGKILL, poll: float = 0.01) -> bool:
    """Sends ``sig`` (default kill -9) to ``process`` as soon as ``condition()`` holds. Returns
    False (and kills it anyway) if the process ended first or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    hit = False
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            hit = True
            break
        time.sleep(poll)
    if process.poll() is None:
        process.send_signal(sig)
    process.communicate(timeout=120)
    return hit
