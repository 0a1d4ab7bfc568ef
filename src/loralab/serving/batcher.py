"""Micro-batching for the HTTP service: concurrent requests become shared model calls.

Requests wait in a bounded asyncio queue; one worker takes the first, gathers more until
``max_batch`` items or ``max_wait_ms``, scores them with one call of the model in a worker thread
(the event loop stays responsive) and hands each request its slice of the results. A lone request
on an idle server (the previous batch had no company either) does not wait: it is scored at once.
Items are opaque here: texts for one model, ``(adapter, text)`` pairs for many adapters.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("loralab.serving.server")


class UnavailableError(Exception):
    """The service cannot take a request now: the queue is full or it is shutting down (HTTP 503)."""


@dataclass
class _Job:
    texts: list  # the request's items (texts, or (adapter, text) pairs)
    future: asyncio.Future


@dataclass
class BatchStats:
    requests: int = 0  # requests scored
    texts: int = 0  # texts scored
    batches: int = 0  # model calls
    largest_batch: int = 0  # most texts in one model call
    rejected: int = 0  # requests refused because the queue was full
    failed: int = 0  # model calls that raised


@dataclass
class MicroBatcher:
    """Gathers concurrent requests into model calls. Create it, then :meth:`start` it inside the
    running event loop; :meth:`submit` returns one result per text, in order.

    The worker waits up to ``max_wait_s`` for company only when there is reason to expect it
    (requests were already queued, or the previous batch held several); a request larger than
    ``max_batch`` texts is scored alone. The model runs in one dedicated thread, never twice at
    once.
    """

    predict: Callable[[list[str]], list]
    max_batch: int = 32
    max_wait_s: float = 0.005
    max_queue: int = 256
    stats: BatchStats = field(default_factory=BatchStats)

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._getter: asyncio.Future | None = None
        self._carry: _Job | None = None
        self._scoring: list[_Job] = []  # the batch the model is working on
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        # one thread: the model is called by one batch at a time, never concurrently
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loralab-predict")
        self._task = asyncio.get_running_loop().create_task(self._worker(), name="loralab-batcher")

    async def stop(self) -> None:
        scoring = list(self._scoring)  # cancelling the worker clears it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._getter is not None:
            self._getter.cancel()
        pending = [*scoring, *([self._carry] if self._carry else [])]
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(UnavailableError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False)  # a model call under way finishes on its own
        self._task = self._getter = self._carry = None

    async def submit(self, texts: list[str]) -> list:
        if not self.running:
            raise UnavailableError("the server is not running (no batching worker)")
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise UnavailableError(f"the server is busy ({self.max_queue} requests waiting); retry shortly") from None
        return await job.future

    async def _next(self, timeout: float | None) -> tuple[_Job | None, bool]:
        """``(job, waited)``: the next job, waiting at most ``timeout`` seconds (None: forever);
        ``waited`` says whether none was ready. A ``get`` that times out is kept for the next
        call rather than cancelled, so no job is ever lost."""
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job, False
        if self._getter is None:
            with contextlib.suppress(asyncio.QueueEmpty):
                return self._queue.get_nowait(), False
            if timeout is not None and timeout <= 0:
                return None, True
            self._getter = asyncio.ensure_future(self._queue.get())
        elif self._getter.done():  # arrived while the model was busy
            job, self._getter = self._getter.result(), None
            return job, False
        done, _ = await asyncio.wait({self._getter}, timeout=timeout)
        if not done:
            return None, True
        job, self._getter = self._getter.result(), None
        return job, True

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        last_requests = 0  # requests in the previous batch
        while True:
            first, idle = await self._next(None)
            # A lone client (the server was idle and the previous batch had no company) is scored
            # at once: waiting for others would only add max_wait to its latency.
            wait = 0.0 if idle and last_requests <= 1 else self.max_wait_s
            batch, n = [first], len(first.texts)
            deadline = loop.time() + wait
            while n < self.max_batch:
                job, _ = await self._next(deadline - loop.time())
                if job is None:
                    break
                if n + len(job.texts) > self.max_batch:
                    self._carry = job  # starts the next batch
                    break
                batch.append(job)
                n += len(job.texts)
            last_requests = len(batch)
            batch = [j for j in batch if not j.future.done()]  # clients that went away
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        self._scoring = batch
        try:
            results = await loop.run_in_executor(self._executor, self.predict, texts)
        except Exception as e:  # the model failed: fail these requests, keep serving
            log.exception("prediction failed for a batch of %d texts", len(texts))
            self.stats.failed += 1
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        finally:
            self._scoring = []
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.texts += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        start = 0
        for job in batch:
            end = start + len(job.texts)
            if not job.future.done():
                job.future.set_result(results[start:end])
            start = end
