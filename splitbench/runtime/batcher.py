"""Dynamic batching (as Triton's): requests that arrive close together run through the model as one batch.

One worker task owns the model. It takes the first waiting request, then keeps collecting until the batch
holds ``max_batch`` requests or ``max_delay_s`` has passed since the first, whichever comes first, and runs the
batch in one dedicated thread, so the event loop keeps accepting, refusing and answering requests meanwhile
(and torch is only ever entered from that one thread). While a batch runs, the next one fills up. The queue is
bounded: :meth:`DynamicBatcher.submit` raises :class:`QueueFull` rather than let waiting work grow without
limit. A request whose caller stopped waiting (timed out, disconnected) is dropped when its batch forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from splitbench.errors import SplitbenchError
from splitbench.runtime.server import BatchAnswer


class QueueFull(SplitbenchError):
    """The batcher's queue is full: the caller should come back later."""


@dataclass(frozen=True)
class Result:
    """One request's answer (or the error that request alone raised) and where its time went."""

    answer: Any
    queue_s: float  # from submit to its batch starting
    decode_s: float  # its batch's entropy decoding
    network_s: float  # its batch's server network
    batch_size: int


@dataclass
class _Job:
    payload: bytes
    submitted: float
    future: asyncio.Future


class DynamicBatcher:
    """Collects payloads into batches for ``process`` (payloads → :class:`BatchAnswer`, run in one thread)."""

    def __init__(self, process: Callable[[list[bytes]], BatchAnswer], max_batch: int = 16,
                 max_delay_s: float = 0.005, queue_size: int = 256) -> None:
        if max_batch < 1 or queue_size < 1 or max_delay_s < 0:
            raise SplitbenchError("max batch and queue size must be at least 1, the max delay at least 0")
        self.process = process
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self.batch_sizes: Counter[int] = Counter()  # batch size → how many batches ran at it
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="splitbench-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, payload: bytes) -> asyncio.Future:
        """Queue ``payload``; the future resolves to its :class:`Result`. A full queue raises :class:`QueueFull`."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(payload, time.perf_counter(), future))
        except asyncio.QueueFull:
            raise QueueFull(f"the server's queue is full ({self.queue.maxsize} requests waiting)") from None
        return future

    async def _collect(self) -> list[_Job]:
        """The next batch: the first waiting job, then more until full or the delay since the first is up."""
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # its caller gave up: no work for it

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self.process, [job.payload for job in batch])
            except Exception as error:  # a bug in the model path: every request of the batch gets it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.batch_sizes[len(batch)] += 1
            for job, answer, size in zip(batch, out.answers, out.sizes, strict=True):
                if not job.future.done():
                    job.future.set_result(Result(answer, started - job.submitted, out.decode_s, out.network_s, size))
