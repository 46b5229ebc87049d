"""What the commands share around their work: what reaches the terminal (a handler on the ``nmt``
logger), TensorFlow imported once the arguments are checked (without its no-GPU chatter), and the
run loaded with the weights asked for."""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
import tempfile

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What TensorFlow prints at start-up on a machine without an NVIDIA driver: true, and no use to anyone.
_NO_GPU_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cuda_platform\.cc:\d+\] failed call to cuInit: "
)


def _nvidia_driver_present() -> bool:
    """Cheap signs of an NVIDIA driver: its device nodes (WSL: /dev/dxg) or libcuda on the loader path."""
    if glob.glob("/dev/nvidia*") or os.path.exists("/dev/dxg") or os.path.exists("/proc/driver/nvidia"):
        return True
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None


def keep_stderr_line(line: str) -> bool:
    """False for TensorFlow's complaints about a missing CUDA driver, True for anything else."""
    return not _NO_GPU_NOISE.search(line)


def import_tensorflow() -> None:
    """Imports TensorFlow and finds its devices, once the arguments are checked (it takes seconds).
    Without an NVIDIA driver, what it writes to stderr meanwhile is held back and replayed without the
    lines that say there is no GPU; with one, nothing is filtered (those lines then mean trouble)."""
    if "tensorflow" in sys.modules or _nvidia_driver_present():
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)  # C++ logging writes to the descriptor, not to sys.stderr
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # cuInit runs, and complains, here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if keep_stderr_line(line)))
            sys.stderr.flush()


class TerminalHandler(logging.Handler):
    """The library's log records on whatever sys.stderr is at the time: INFO as plain lines
    ("resumed from ...", "step 100/..."), WARNING and above as ``warning: message``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never take the command down
            self.handleError(record)


def setup_logging(quiet: bool = False, exclusive: bool = False) -> None:
    """Shows the ``nmt`` loggers' INFO and above on stderr (``quiet``: warnings and errors only);
    ``exclusive``: not also through the root logger's handlers. Called once per command; a second
    call (tests run many in one process) only sets the level."""
    logger = logging.getLogger("nmt")
    logger.propagate = not exclusive
    level = logging.WARNING if quiet else logging.INFO
    handler = next((h for h in logger.handlers if isinstance(h, TerminalHandler)), None)
    if handler is None:
        handler = TerminalHandler()
        logger.addHandler(handler)
    handler.setLevel(level)
    logger.setLevel(level)


def weights_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default="best", metavar="best|latest|averaged|ckpt-N",
                        help="best dev weights (default; after nmt average, the averaged weights where they score "
                        "higher), the latest checkpoint, the mean of the last checkpoints (averaged, written by "
                        "nmt average or train.average_last), or one kept checkpoint by name (ckpt-N, as in "
                        "RUN/checkpoints). latest (and best before a best file exists) skips a damaged checkpoint "
                        "for the one before it, with a warning; a damaged file asked for by name is an error. "
                        "translate and evaluate: a comma list (ckpt-16000,ckpt-17000,best) decodes with an ensemble "
                        "of those weights")


def load_predictor(args: argparse.Namespace):
    """The run of ``args.run`` with ``args.weights``, once TensorFlow is imported; a run of the wrong
    task for the verb (checks.TASKS) is an error."""
    from nmt.cli.checks import required_task

    import_tensorflow()
    from nmt.inference import load_members

    return load_members(getattr(args, "runs", None) or [args.run], args.weights, required_task(args),
                        getattr(args, "shortlist", None), getattr(args, "ensemble_mode", "log_probs"))
