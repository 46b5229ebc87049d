"""The commands' text in and out: input lines from a file or stdin, outputs written atomically
(or to stdout), and progress bars (tqdm, on stderr, shown only on a terminal)."""

from __future__ import annotations

import sys
from pathlib import Path

from nmt.errors import NmtError

STDIO = (None, "-")  # an input or output option that means stdin / stdout


def read_input_lines(path: str | None) -> list[str]:
    """Lines of a file or stdin; a line is what lies between newlines (no other separators)."""
    from nmt.data import decode_lines, read_lines

    if path in STDIO:
        return [line for _, line in decode_lines(sys.stdin.buffer, "<stdin>")]
    if not Path(path).is_file():
        raise NmtError(f"input file not found: {path}")
    return [line for _, line in read_lines(path)]


def write_output(path: str | None, text: str) -> None:
    """``text`` to stdout, or to ``path`` atomically: the file appears complete or not at all."""
    from nmt.io import atomic_writer

    if path in STDIO:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as error:
            raise OSError(error.errno, error.strerror, "<stdout>") from None
    else:
        with atomic_writer(path) as handle:
            handle.write(text)


def write_lines(path: str | None, lines: list[str]) -> None:
    write_output(path, "".join(line + "\n" for line in lines))


def progress_bar(total: int, label: str, unit: str = "sent", quiet: bool = False):
    """A tqdm bar on stderr, hidden when stderr is not a terminal or the command is ``--quiet``."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=label, file=sys.stderr, disable=quiet or not sys.stderr.isatty())
