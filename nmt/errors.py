"""The one exception type that the CLI turns into a clean message and a non-zero exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class NmtError(Exception):
    """A problem with the user's input (config, data, run directory, arguments).

    The message must say where the problem is (file and line, or config key) and, when it can,
    how to fix it. The CLI prints it without a traceback and exits with status 2.
    """


@contextlib.contextmanager
def as_nmt_error() -> Iterator[None]:
    """The shared argument rules (:mod:`nmt.signatures`) raise ValueError, which the servers answer
    as a 400; for the Python API and the CLI the same message is an NmtError."""
    try:
        yield
    except ValueError as error:
        raise NmtError(str(error)) from None
