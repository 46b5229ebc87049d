"""Request batching: concurrent calls of one signature share a model call.

TensorFlow uses every core for one call, so one model call runs at a time per model version, and
the calls that arrive meanwhile wait to run together as the next batch: throughput grows with load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from nmt.serving.config import Limits
from nmt.serving.http_guard import RequestError

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
T = TypeVar("T")
Pending = tuple[Arrays, asyncio.Future]


class Batcher:
    """Merges concurrent calls of one signature into batches along the first axis.

    While the model is busy, arriving calls wait and join the next batch (up to ``max_batch_size``
    rows); when it is idle, a call waits at most ``max_wait_ms`` for company. So batches grow with
    the load, and a lone request pays at most the wait.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], executor: ThreadPoolExecutor, limits: Limits) -> None:
        self.run, self.executor, self.limits = run, executor, limits
        self.pending: list[Pending] = []
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight = 0  # batches handed to the model and not finished
        self.running: set[asyncio.Task] = set()  # referenced until done (asyncio keeps weak refs)
        self.stats = {"batches": 0, "rows": 0}

    def _call_model(self, inputs: Arrays) -> Arrays:
        import tensorflow as tf

        try:
            return self.run(inputs)
        except tf.errors.InvalidArgumentError as error:
            raise RequestError(f"invalid argument: {graph_error_summary(error.message)}") from None

    async def __call__(self, inputs: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        if not self.limits.batching:
            self.stats["batches"] += 1
            self.stats["rows"] += _rows(inputs)
            return await loop.run_in_executor(self.executor, self._call_model, inputs)
        future: asyncio.Future = loop.create_future()
        self.pending.append((inputs, future))
        self._schedule()
        return await future

    def _pending_rows(self) -> int:
        return sum(_rows(i) for i, _ in self.pending)

    def _schedule(self) -> None:
        while self.pending and self._pending_rows() >= self.limits.max_batch_size:
            self._dispatch()
        if self.pending and not self.in_flight and self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.limits.max_wait_ms / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.pending and not self.in_flight:
            self._dispatch()
        # Otherwise the batch in flight dispatches the waiting calls when it finishes.

    def _dispatch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch: list[Pending] = []
        rows = 0
        while self.pending and (not batch or rows + _rows(self.pending[0][0]) <= self.limits.max_batch_size):
            item = self.pending.pop(0)
            batch.append(item)
            rows += _rows(item[0])
        self.in_flight += 1
        task = asyncio.ensure_future(self._run(batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            await self._answer(batch)
        finally:
            self.in_flight -= 1
            if self.pending and not self.in_flight:
                self._dispatch()  # these calls waited through a whole model call already
            self._schedule()

    async def _answer(self, batch: list[Pending]) -> None:
        try:
            merged = {key: np.concatenate([_pad_to(i[key], batch, key) for i, _ in batch]) for key in batch[0][0]}
            self.stats["batches"] += 1
            self.stats["rows"] += _rows(merged)
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, merged)
        except RequestError as error:
            if len(batch) > 1:  # one request's bad input must not fail the others: run them alone
                for inputs, future in batch:
                    await self._run_alone(inputs, future)
                return
            failure: Exception = error
        except Exception as error:  # noqa: BLE001 - every waiting request gets an answer
            log.exception("model call failed")
            failure = RequestError(f"model error: {type(error).__name__}", 500)
        else:
            start = 0
            for inputs, future in batch:
                n = _rows(inputs)
                if not future.done():  # its client may be gone
                    future.set_result({k: v[start : start + n] for k, v in outputs.items()})
                start += n
            return
        for _, future in batch:
            if not future.done():
                future.set_exception(failure)

    async def _run_alone(self, inputs: Arrays, future: asyncio.Future) -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, inputs)
        except Exception as error:  # noqa: BLE001
            if not isinstance(error, RequestError):
                log.exception("model call failed")
            if not future.done():
                future.set_exception(error if isinstance(error, RequestError) else RequestError("model error", 500))
            return
        if not future.done():
            future.set_result(result)


async def within_deadline(awaitable: Awaitable[T], seconds: float) -> T:
    """``awaitable``'s result, or a RequestError 504 once ``seconds`` have passed (TF Serving's
    ``--rest_api_timeout_in_ms``; gRPC answers it as DEADLINE_EXCEEDED). A model call already
    running finishes in its thread; its answer is dropped."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise RequestError(f"Deadline Exceeded: the request took over {seconds * 1000:g} ms", 504) from None


def graph_error_summary(message: str) -> str:
    """The line of a TensorFlow error that says what is wrong (an assertion's message), not its
    "Graph execution error:" heading or node trace."""
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                      "<stack traces", "[[{{node"))]
    chosen = next((line for line in useful if "assertion failed" in line), useful[0] if useful else message)
    return chosen[:300]


def _rows(inputs: Arrays) -> int:
    return len(next(iter(inputs.values())))


def _pad_to(array: np.ndarray, batch: list[Pending], key: str) -> np.ndarray:
    """2-D inputs (token ids) of different widths are zero-padded to the widest in the batch."""
    if array.ndim < 2:
        return array
    width = max(i[key].shape[1] for i, _ in batch)
    return np.pad(array, [(0, 0), (0, width - array.shape[1])])
