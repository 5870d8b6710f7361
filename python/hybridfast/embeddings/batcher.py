"""Dynamic batching for a local embedding model.

Concurrent requests are coalesced: a batch closes when it holds `max_batch` texts or when its
oldest request has waited `max_wait_ms`, runs in one native call (GIL released) on the
batcher's own thread, and each caller gets back exactly its rows, in order. While a batch
runs, the next one fills, so under load the wait costs nothing and batches grow by themselves.

- Priorities: `interactive` (0) requests are always taken before `batch` (1) ones.
- A request larger than `max_batch` is cut into chunks of `max_batch` texts queued one after
  another, so one bulk job cannot hold the model for long while interactive requests wait.
- The wait is adaptive: when requests arrive further apart than `max_wait_ms` (a single
  client), a batch starts at once instead of waiting for company that will not come.
- The queue is bounded (`max_queue` texts): beyond it `submit` raises `RateLimited` (429) with
  a `Retry-After` from the measured throughput.
- Cancellation: a caller that goes away (client disconnect) cancels its chunks; chunks not yet
  started are dropped from their batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from hybridfast.errors import RateLimited
from hybridfast.metrics import Counter, Gauge, Histogram

Matrix = npt.NDArray[np.float32]
RunBatch = Callable[[list[str]], tuple[Matrix, Sequence[int]]]

INTERACTIVE, BATCH = 0, 1

BATCH_TEXTS = Histogram(
    "hybridfast_embed_batch_texts",
    "Texts per batch the local embedding model ran",
    ["model"],
    (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
QUEUE_TEXTS = Gauge(
    "hybridfast_embed_queue_texts",
    "Texts waiting for the local embedding model",
    ["model"],
)
CANCELLED = Counter(
    "hybridfast_embed_cancelled_texts",
    "Queued texts dropped because their client went away",
    ["model"],
)
REJECTED = Counter(
    "hybridfast_embed_rejected",
    "Embedding requests refused because the batching queue was full",
    ["model"],
)


@dataclass(slots=True)
class _Job:
    texts: list[str]
    future: asyncio.Future[tuple[Matrix, list[int]]]
    priority: int
    gone: Callable[[], bool] | None = None  # True once the caller is no longer there
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Coalesces `submit` calls into batches for `run` (texts → rows, per-text token counts)."""

    def __init__(
        self,
        run: RunBatch,
        *,
        name: str = "local",
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be ≥ 1 and max_wait_ms ≥ 0")
        self._run = run
        self.name = name
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._queues: tuple[deque[_Job], deque[_Job]] = (deque(), deque())
        self._queued = 0  # texts in the queues, cancelled chunks included until dropped
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # One thread: the native call already uses every core for a batch.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"hybridfast-embed-{name}")
        self._texts_per_s = 0.0  # EWMA, for Retry-After
        # EWMA of the time between requests: waiting for company only pays when another
        # request is likely to arrive within max_wait (a lone client would just wait).
        self._gap = math.inf
        self._last_arrival = 0.0
        self._closed = False
        self.batches = 0  # counters for tests and the admin view
        self.texts = 0
        self.waits = 0  # times a batch waited for more requests

    @property
    def queued(self) -> int:
        return self._queued

    async def submit(
        self,
        texts: list[str],
        priority: int = INTERACTIVE,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[Matrix, list[int]]:
        """Rows for `texts` in order, and the token count of each text.

        `gone` says whether the caller has left (a closed client connection): its chunks
        still queued are dropped then, without computing them."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if not texts:
            return np.empty((0, 0), dtype=np.float32), []
        # An empty queue takes any request: one larger than max_queue would never fit.
        if self._queued and self._queued + len(texts) > self.max_queue:
            REJECTED.labels(self.name).inc()
            retry = self._retry_after(len(texts))
            raise RateLimited(
                f"the embedding queue of {self.name} is full "
                f"({self._queued} of {self.max_queue} texts waiting)",
                headers={"Retry-After": str(retry)},
            )
        loop = asyncio.get_running_loop()
        priority = INTERACTIVE if priority <= INTERACTIVE else BATCH
        jobs = []
        for start in range(0, len(texts), self.max_batch):
            chunk = texts[start : start + self.max_batch]
            job = _Job(chunk, loop.create_future(), priority, gone)
            self._queues[priority].append(job)
            jobs.append(job)
        self._queued += len(texts)
        QUEUE_TEXTS.labels(self.name).set(self._queued)
        now = time.monotonic()
        if self._last_arrival:
            gap = now - self._last_arrival
            self._gap = gap if math.isinf(self._gap) else 0.7 * self._gap + 0.3 * gap
        self._last_arrival = now
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name=f"embed-batcher-{self.name}")
        try:
            results = [await job.future for job in jobs]
        except BaseException:
            for job in jobs:
                job.future.cancel()
            raise
        if len(results) == 1:
            return results[0]
        rows = np.concatenate([r[0] for r in results])
        return rows, [n for r in results for n in r[1]]

    def _retry_after(self, incoming: int) -> int:
        rate = self._texts_per_s or 100.0
        return max(1, math.ceil((self._queued + incoming - self.max_queue) / rate + 0.5))

    def _pending(self) -> int:
        return sum(len(j.texts) for q in self._queues for j in q)

    def _oldest(self) -> float:
        return min(q[0].enqueued for q in self._queues if q)

    def _take(self) -> list[_Job]:
        """Up to `max_batch` texts, interactive first; cancelled chunks are dropped."""
        taken: list[_Job] = []
        size = 0
        for queue in self._queues:
            while queue and size + len(queue[0].texts) <= self.max_batch:
                job = queue.popleft()
                self._queued -= len(job.texts)
                if job.future.done():  # cancelled by its caller
                    continue
                if job.gone is not None and job.gone():
                    CANCELLED.labels(self.name).inc(len(job.texts))
                    job.future.set_exception(ConnectionResetError("the client went away"))
                    continue
                taken.append(job)
                size += len(job.texts)
        return taken

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while any(self._queues):
            # Wait for a fuller batch only while the oldest request is younger than max_wait.
            while self._pending() < self.max_batch and self._gap < self.max_wait:
                remaining = self._oldest() + self.max_wait - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                self.waits += 1
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            QUEUE_TEXTS.labels(self.name).set(self._queued)
            if not batch:
                continue
            texts = [t for job in batch for t in job.texts]
            started = time.perf_counter()
            try:
                rows, tokens = await loop.run_in_executor(self._executor, self._run, texts)
            except Exception as exc:  # the model failed: every caller in the batch hears it
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                for job in batch:
                    job.future.cancel()
                raise
            elapsed = max(time.perf_counter() - started, 1e-6)
            rate = len(texts) / elapsed
            self._texts_per_s = (
                rate if not self._texts_per_s else 0.8 * self._texts_per_s + 0.2 * rate
            )
            self.batches += 1
            self.texts += len(texts)
            BATCH_TEXTS.labels(self.name).observe(len(texts))
            offset = 0
            for job in batch:
                n = len(job.texts)
                if not job.future.done():
                    job.future.set_result(
                        (rows[offset : offset + n], list(tokens[offset : offset + n]))
                    )
                offset += n

    async def close(self) -> None:
        """Fails what is queued, stops the worker and its thread."""
        self._closed = True
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for queue in self._queues:
            while queue:
                job = queue.popleft()
                if not job.future.done():
                    job.future.cancel()
        self._queued = 0
        self._executor.shutdown(wait=False, cancel_futures=True)
