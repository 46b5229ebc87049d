"""What a request can fail with, and how each API says it: one :class:`RequestError` (an HTTP
status and a message), TensorFlow's graph errors mapped onto it, and the HTTP status <-> gRPC code
table REST, gRPC and the metrics all read. Imports nothing heavy."""

from __future__ import annotations

from nmt.errors import NmtError

# HTTP status -> the gRPC status code name TF Serving answers with (and counts in its metrics).
GRPC_CODES = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED",
              413: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
              504: "DEADLINE_EXCEEDED"}
# A TensorFlow OpError's class -> the HTTP status of the request it failed (the rest: 500) and, where
# the table above would not say it, its own gRPC code (TF Serving passes the graph's code through).
GRAPH_ERROR_STATUS = {"InvalidArgumentError": 400, "FailedPreconditionError": 400, "OutOfRangeError": 400,
                      "NotFoundError": 404, "ResourceExhaustedError": 413, "DeadlineExceededError": 504,
                      "UnimplementedError": 501}
GRAPH_ERROR_CODES = {"FailedPreconditionError": "FAILED_PRECONDITION", "OutOfRangeError": "OUT_OF_RANGE"}


class RequestError(Exception):
    """A request that failed: answered with ``{"error": message}`` and ``status`` over REST, and
    with the matching gRPC code over gRPC (``code``, where the status alone does not say it), as TF
    Serving does. ``close``: the connection cannot carry another request (its body was not read)."""

    def __init__(self, message: str, status: int = 400, close: bool = False, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.close, self.code = message, status, close, code

    @property
    def grpc_code(self) -> str:
        return self.code or grpc_code(self.status)


def grpc_code(http_status: int) -> str:
    return GRPC_CODES.get(http_status, "UNKNOWN")


def as_request_error(error: Exception) -> RequestError:
    """Any failure of a call as the RequestError its client gets: a RequestError as it is, a
    checked NmtError as the client's mistake (400), anything else as INTERNAL with its type."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, NmtError):
        return RequestError(str(error))
    return RequestError(f"model error: {type(error).__name__}", 500)


def graph_error(error: Exception) -> RequestError:
    """A TensorFlow OpError as the client's answer: its status by kind, its useful line."""
    kind = type(error).__name__
    return RequestError(graph_error_summary(getattr(error, "message", str(error))), GRAPH_ERROR_STATUS.get(kind, 500),
                        code=GRAPH_ERROR_CODES.get(kind))


def graph_error_summary(message: str) -> str:
    """The line of a TensorFlow error that says what is wrong (an assertion's message), not its
    "Graph execution error:" heading, node trace or Python frames (they name server paths)."""
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                      "<stack traces", "[[{{node", "File \""))]
    chosen = next((line for line in useful if "assertion failed" in line), useful[0] if useful else message)
    return chosen[:300]
