"""One path for every model call, whichever door it came in by: TF Serving's REST API, its gRPC
API or nmt's task endpoints. Each of those only decodes its request and encodes the answer; here
the call is resolved to a model version and signature, held to the server's limits, bounded by
its deadline, counted in the metrics, and its failure turned into one typed
:class:`~nmt.serving.errors.RequestError` (which REST answers with its HTTP status and gRPC with
the matching code)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import numpy as np
from starlette.requests import Request

from nmt import signatures
from nmt.serving import tf_examples
from nmt.serving.batching import Arrays
from nmt.serving.config import Limits
from nmt.serving.errors import RequestError, as_request_error, grpc_code
from nmt.serving.metrics import Metrics
from nmt.serving.registry import ModelRegistry, Servable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ClientDeadline:
    """A gRPC client's deadline: ``seconds`` it gave the call (as left on arrival), ending at
    ``at`` (time.monotonic()); ``seconds`` None: it gave none."""

    seconds: float | None
    at: float | None

    @classmethod
    def from_now(cls, seconds: float | None) -> ClientDeadline:
        return cls(None, None) if seconds is None else cls(round(seconds, 3), time.monotonic() + seconds)

    # gRPC's own timer cancels the call at the deadline; ours reads another clock, a hair apart.
    SLACK_S = 0.05

    def passed(self) -> bool:
        """Whether the deadline has come (within :attr:`SLACK_S`)."""
        return self.at is not None and time.monotonic() >= self.at - self.SLACK_S

    def left(self) -> float | None:
        """The seconds to wait for the model: up to :attr:`SLACK_S` before the deadline, so that
        the server answers DEADLINE_EXCEEDED itself rather than being cancelled mid-call."""
        return None if self.at is None else max(self.at - self.SLACK_S - time.monotonic(), 0.0)


# The deadline of the call being served, where its entry point has its own (gRPC: the client's);
# unset, the REST timeout applies (TF Serving's --rest_api_timeout_in_ms, for REST only).
CALL_DEADLINE: contextvars.ContextVar[ClientDeadline | None] = contextvars.ContextVar("call_deadline", default=None)
CLIENT_CLOSED = 499  # the client went away before its answer (nginx's status; gRPC's CANCELLED)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a request names: a model, and optionally a version or a version label, and a signature
    ("": serving_default)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""


@dataclasses.dataclass
class Tally:
    """What one counted call reports to the metrics: its model (known once resolved) and examples."""

    model: str
    examples: int = 0


def check_request_size(arrays: dict[str, np.ndarray], limits: Limits, token_ids: bool = False) -> None:
    """The server's limits on one request, whatever its API: rows, token ids per row (``token_ids``:
    an nmt export's integer inputs), characters per text (bytes for a tensor's strings)."""
    limits.check_rows(max((len(a) for a in arrays.values() if a.ndim), default=1))
    for name, array in arrays.items():
        if token_ids and array.ndim == 2 and array.dtype.kind in "iu" and array.shape[1] > limits.max_text_chars:
            raise RequestError(f"input {name}: {array.shape[1]} tokens is over the limit of {limits.max_text_chars}")
        if array.dtype == object:
            longest = max((len(s) for s in array.flat), default=0)
            if longest > limits.max_text_chars:
                raise RequestError(f"input {name}: a text of {longest} characters is over the limit of "
                                   f"{limits.max_text_chars} characters")


class Calls:
    """The server's call core over its registry and metrics (one per server, shared by its APIs)."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry, self.metrics = registry, metrics

    @property
    def limits(self) -> Limits:
        return self.registry.limits

    @property
    def max_message_bytes(self) -> int:
        return self.limits.max_message_bytes

    @contextlib.asynccontextmanager
    async def counted(self, api: str, entrypoint: str, model: str = "") -> AsyncIterator[Tally]:
        """Times and counts the call made inside (TF Serving's metric names: by model, API and
        entry point, with its status code); any failure leaves as a RequestError."""
        started, tally, code = time.perf_counter(), Tally(model), grpc_code(200)
        try:
            yield tally
        except asyncio.CancelledError:
            deadline = CALL_DEADLINE.get()
            # gRPC cancels a call whose client deadline passed: that is a deadline, not a client gone.
            code = grpc_code(504 if deadline is not None and deadline.passed() else CLIENT_CLOSED)
            raise
        except Exception as error:
            failure = as_request_error(error)
            code = failure.grpc_code
            if failure is error:
                raise
            if failure.status == 500:
                log.error("%s %s failed", entrypoint, api, exc_info=error)  # the client gets its type only
            raise failure from None
        finally:
            # A name the config does not list is counted under "": clients cannot add series at will.
            model_label = tally.model if tally.model in self.registry.entries else ""
            self.metrics.record(model_label, api, entrypoint, code, time.perf_counter() - started,
                                tally.examples if code == "OK" else 0)

    async def within_deadline(self, awaitable: Awaitable[T]) -> T:
        """``awaitable``'s result, or a RequestError 504 once the call's time is up: the request
        timeout over REST and the task endpoints (TF Serving's ``--rest_api_timeout_in_ms``), the
        client's own deadline over gRPC (answered as DEADLINE_EXCEEDED). A model call already
        running finishes in its thread; its answer is dropped."""
        deadline = CALL_DEADLINE.get()
        seconds = self.limits.request_timeout_s if deadline is None else deadline.seconds
        try:
            return await asyncio.wait_for(awaitable, seconds if deadline is None else deadline.left())
        except TimeoutError:
            raise RequestError(f"Deadline Exceeded: the request took over {seconds * 1000:g} ms", 504) from None

    def resolve(self, target: Target, tally: Tally | None = None) -> tuple[Servable, str]:
        """The version a request names and its signature (which must exist)."""
        servable = self.registry.resolve(target.name, target.version, target.label)
        if tally is not None:
            tally.model = servable.name
        signature = target.signature or signatures.SERVING_DEFAULT
        servable.check_signature(signature)
        return servable, signature

    async def predict(self, servable: Servable, signature: str, arrays: Arrays) -> Arrays:
        check_request_size(arrays, self.limits, token_ids=servable.record is not None)
        return await self.within_deadline(servable.predict(signature, arrays))

    async def examples(self, servable: Servable, signature: str, method: str, serialized: list[bytes],
                       tally: Tally) -> Any:
        """Classify (per example: (label, score) pairs) or Regress (per example: a value)."""
        self.limits.check_rows(len(serialized))
        tally.examples = len(serialized)
        call = servable.classify if method == tf_examples.CLASSIFY_METHOD else servable.regress
        return await self.within_deadline(call(signature, serialized))

    async def multi_inference(self, tasks: list[tuple[Target, str]], serialized: list[bytes],
                              tally: Tally) -> tuple[Servable, list[tuple[str, Any]]]:
        """Each task (its target and method) over the same examples, under TF Serving's rules: one
        model (the first task's version), each signature at most once, classify or regress only.
        One deadline and one row limit for the whole request."""
        if not tasks:
            raise RequestError("MultiInferenceRequest has no tasks")
        seen: set[str] = set()
        for target, method in tasks:
            if not target.name:
                raise RequestError("Found ModelSpec with an empty model name.")
            if target.name != tasks[0][0].name:
                raise RequestError("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            signature = target.signature or signatures.SERVING_DEFAULT
            if signature in seen:
                raise RequestError(f"Duplicate evaluation of signature: {signature}")
            seen.add(signature)
            if method not in (tf_examples.CLASSIFY_METHOD, tf_examples.REGRESS_METHOD):
                raise RequestError(f"Unsupported signature method_name: {method}", 501)
        first = tasks[0][0]
        servable = self.registry.resolve(first.name, first.version, first.label)
        tally.model = servable.name
        self.limits.check_rows(len(serialized))
        tally.examples = len(serialized)
        for target, _ in tasks:
            servable.check_signature(target.signature or signatures.SERVING_DEFAULT)

        async def run_all() -> list[tuple[str, Any]]:
            results = []
            for target, method in tasks:
                signature = target.signature or signatures.SERVING_DEFAULT
                call = servable.classify if method == tf_examples.CLASSIFY_METHOD else servable.regress
                results.append((signature, await call(signature, serialized)))
            return results

        return servable, await self.within_deadline(run_all())


def calls_of(request: Request) -> Calls:
    """FastAPI dependency: the call core the app serves with (create_app keeps it in app.state)."""
    return request.app.state.calls
