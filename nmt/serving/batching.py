"""Request batching: concurrent calls of one signature share a model call.

TensorFlow uses every core for one call, so one model call runs at a time per model version, and
the calls that arrive meanwhile wait to run together as the next batch: throughput grows with load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nmt.serving.config import Limits
from nmt.serving.errors import RequestError, graph_error

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
Pending = tuple[Arrays, asyncio.Future]


class Batcher:
    """Merges concurrent calls of one signature into batches along the first axis.

    While the model is busy, arriving calls wait and join the next batch (up to ``max_batch_size``
    rows); when it is idle, a call waits at most ``max_wait_ms`` for company. So batches grow with
    the load, and a lone request pays at most the wait.

    Only calls that can share a batch join one: every input at least 1-d with one batch size, and
    the same dtypes and trailing dimensions as the batch's first call (token ids of different
    widths are padded when ``pad_ids``). Any other call runs alone, and its shapes are the graph's
    to judge. A batch that fails is run again call by call, so a bad call fails alone.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], executor: ThreadPoolExecutor, limits: Limits,
                 pad_ids: bool = False) -> None:
        self.run, self.executor, self.limits, self.pad_ids = run, executor, limits, pad_ids
        self.pending: list[Pending] = []
        self.timer: asyncio.TimerHandle | None = None
        self.in_flight = 0  # batches handed to the model and not finished
        self.running: set[asyncio.Task] = set()  # referenced until done (asyncio keeps weak refs)
        self.stats = {"batches": 0, "rows": 0}

    def _call_model(self, inputs: Arrays) -> Arrays:
        import tensorflow as tf

        try:
            return self.run(inputs)
        except tf.errors.OpError as error:
            raise graph_error(error) from None

    async def __call__(self, inputs: Arrays) -> Arrays:
        rows = batch_rows(inputs)
        if not self.limits.batching or rows is None:
            return await self._alone(inputs)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.pending.append((inputs, future))
        self._schedule()
        return await future

    async def _alone(self, inputs: Arrays) -> Arrays:
        self.stats["batches"] += 1
        self.stats["rows"] += batch_rows(inputs) or 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, inputs)
        except RequestError:
            raise
        except Exception as error:  # noqa: BLE001 - the client gets a status, the log the trace
            log.exception("model call failed")
            raise RequestError(f"model error: {type(error).__name__}", 500) from None

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
        batch: list[Pending] = [self.pending.pop(0)]
        kind, rows = self._kind(batch[0][0]), _rows(batch[0][0])
        waiting = []
        for item in self.pending:  # the calls that fit, in arrival order; the others wait
            if self._kind(item[0]) == kind and rows + _rows(item[0]) <= self.limits.max_batch_size:
                batch.append(item)
                rows += _rows(item[0])
            else:
                waiting.append(item)
        self.pending = waiting
        self.in_flight += 1
        task = asyncio.ensure_future(self._run(batch))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def _kind(self, inputs: Arrays) -> tuple:
        """What calls in one batch must share: names, dtypes, trailing dimensions (but the width
        of padded token ids)."""
        return tuple((name, array.dtype.str, array.ndim if self._padded(array) else array.shape[1:])
                     for name, array in sorted(inputs.items()))

    def _padded(self, array: np.ndarray) -> bool:
        return self.pad_ids and array.ndim == 2 and array.dtype.kind in "iu"

    async def _run(self, batch: list[Pending]) -> None:
        try:
            await self._answer(batch)
        finally:
            self.in_flight -= 1
            if self.pending and not self.in_flight:
                self._dispatch()  # these calls waited through a whole model call already
            self._schedule()

    async def _answer(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            await self._answer_alone(*batch[0])
            return
        try:
            merged = {key: np.concatenate([self._pad_to(i[key], batch, key) for i, _ in batch]) for key in batch[0][0]}
            self.stats["batches"] += 1
            self.stats["rows"] += _rows(merged)
            outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self._call_model, merged)
            total = _rows(merged)
            if any(np.ndim(v) == 0 or len(v) != total for v in outputs.values()):
                raise ValueError("outputs do not have one row per input row")  # cannot be split: run alone
        except Exception:  # noqa: BLE001 - one call's bad input must not fail the others: each runs alone
            for inputs, future in batch:
                await self._answer_alone(inputs, future)
            return
        start = 0
        for inputs, future in batch:
            n = _rows(inputs)
            if not future.done():  # its client may be gone
                future.set_result({k: v[start : start + n] for k, v in outputs.items()})
            start += n

    async def _answer_alone(self, inputs: Arrays, future: asyncio.Future) -> None:
        try:
            result = await self._alone(inputs)
        except Exception as error:  # noqa: BLE001 - every waiting request gets an answer
            if not future.done():
                future.set_exception(error)
            return
        if not future.done():
            future.set_result(result)

    def _pad_to(self, array: np.ndarray, batch: list[Pending], key: str) -> np.ndarray:
        """Token ids of different widths are zero-padded to the widest in the batch."""
        if not self._padded(array):
            return array
        width = max(i[key].shape[1] for i, _ in batch)
        return np.pad(array, [(0, 0), (0, width - array.shape[1])])


def batch_rows(inputs: Arrays) -> int | None:
    """The rows of a call that can join a batch: its inputs all at least 1-d with one batch size
    of at least one row; None for any other call (no inputs, a scalar, sizes that disagree)."""
    if not inputs or any(np.ndim(a) == 0 for a in inputs.values()):
        return None
    sizes = {len(a) for a in inputs.values()}
    return sizes.pop() if len(sizes) == 1 and 0 not in sizes else None


def _rows(inputs: Arrays) -> int:
    return len(next(iter(inputs.values())))
