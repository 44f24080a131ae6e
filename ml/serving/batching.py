"""Adaptive batching for one-sample requests.

BentoML's own batching (``@bentoml.api(batchable=True)``) merges list-valued requests; our
endpoint takes one JSON sample per request, so the service batches in-process with the same
two knobs, ``max_batch_size`` and ``max_latency_ms``:

- when the model thread is idle, whatever is queued goes at once (no timer: a lone request
  is not delayed at low load);
- while a batch runs, new requests queue; the next batch takes up to ``max_batch_size`` of
  them, so the batch size follows the load by itself;
- a request that waited ``max_latency_ms`` before its batch started is refused
  (``OverloadedError``, HTTP 503) rather than letting the queue grow without bound.

Batches run on one dedicated thread, so the event loop keeps accepting requests while the
model computes. Each job carries a group key and a batch holds one group only: the runtime
groups by model version (A/B) and by the shape of the input (which optional fields are set,
the image frame size), since one batch is one set of stacked tensors.

One request never fails another: when a batch of several raises, each of its items is run
again alone, so the item that caused the error gets it and the others get their answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """The request waited longer than ``max_latency_ms`` for a batch slot."""


@dataclass
class _Job:
    group: Hashable
    item: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class AdaptiveBatcher:
    """``await submit(group, item)`` returns ``run_batch(group, [item, ...])[i]``."""

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], Sequence[Any]], *,
                 max_batch_size: int, max_latency_ms: float,
                 on_batch: Callable[[Hashable, int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_ms / 1000.0
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tp-batch")

    async def submit(self, group: Hashable, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._dispatch_forever())
        job = _Job(group, item, loop.create_future())
        self._queue.append(job)
        self._wake.set()
        return await job.future

    def _take_batch(self) -> tuple[Hashable, list[_Job]]:
        now = time.perf_counter()
        while self._queue and now - self._queue[0].enqueued > self.max_latency_s:
            stale = self._queue.popleft()
            if not stale.future.done():
                stale.future.set_exception(OverloadedError(
                    f"request waited {1000 * (now - stale.enqueued):.0f} ms for the model, "
                    f"over the {1000 * self.max_latency_s:.0f} ms limit"))
        if not self._queue:
            return None, []
        group = self._queue[0].group
        batch, rest = [], deque()
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            (batch if job.group == group else rest).append(job)
        # Jobs of other groups keep their place at the head of the queue.
        self._queue.extendleft(reversed(rest))
        return group, batch

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            group, batch = self._take_batch()
            if not batch:
                continue
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                continue
            try:
                results = await self._run(loop, group, batch)
            except Exception as exc:
                if len(batch) == 1:  # the caller gets the error (and logs it if it is the server's)
                    _fail(batch[0], exc)
                    continue
                # Which item caused it is unknown: run each alone, so only that one fails.
                log.warning("a batch of %d for %s failed (%r); running its requests one by one",
                            len(batch), group, exc)
                for job in batch:
                    try:
                        (result,) = await self._run(loop, group, [job])
                    except Exception as single:
                        _fail(job, single)
                    else:
                        _succeed(job, result)
                continue
            for job, result in zip(batch, results):
                _succeed(job, result)

    async def _run(self, loop: asyncio.AbstractEventLoop, group: Hashable, batch: list[_Job]) -> Sequence[Any]:
        results = await loop.run_in_executor(self._executor, self._run_batch, group, [job.item for job in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        if self._on_batch is not None:
            self._on_batch(group, len(batch))
        return results

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


def _succeed(job: _Job, result: Any) -> None:
    if not job.future.done():
        job.future.set_result(result)
