"""The one exception type that the CLI turns into a clean message and a non-zero exit."""


class NmtError(Exception):
    """A problem with the user's input (config, data, run directory, arguments).

    The message must say where the problem is (file and line, or config key) and, when it can,
    how to fix it. The CLI prints it without a traceback and exits with status 2.
    """
