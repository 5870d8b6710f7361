"""Admission: a request that finds a deployment at its concurrency limit waits its turn.

Each deployment with `max_concurrency` gets a `FairQueue` from the native core, which decides
the order (priority first, tenants of one priority in turn, starvation bounded). This module
owns only the waiting: one asyncio future per ticket, woken when a finishing request hands its
slot over. Nothing polls: a slot is handed over in the same call that frees it.

A waiter leaves the queue when its deadline passes or its client disconnects (the task is
cancelled); a full queue refuses at once. Both are `QueueFull` (429 with Retry-After), which
the attempt loop treats like a saturated deployment: the next deployment of the plan is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from hybridfast._core import FairQueue
from hybridfast.errors import QueueFull

# `x-hybridfast-priority` names; numbers 0..MAX_PRIORITY work too (lower starts first).
PRIORITY_NAMES: Mapping[str, int] = {"interactive": 0, "batch": 9}
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 0


def parse_priority(value: str | None, default: int = DEFAULT_PRIORITY) -> int:
    """The priority a header names; unknown or out-of-range values fall back to `default`."""
    if not value:
        return default
    value = value.strip().lower()
    if value in PRIORITY_NAMES:
        return PRIORITY_NAMES[value]
    if value.isdigit() and int(value) <= MAX_PRIORITY:
        return int(value)
    return default


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class _Queue:
    __slots__ = ("core", "waiters")

    def __init__(self, limit: int, max_queue: int, starvation_ms: int) -> None:
        self.core = FairQueue(limit, max_queue, starvation_ms)
        self.waiters: dict[int, asyncio.Future[None]] = {}

    def release(self) -> None:
        """Frees a slot, handing it to the next waiter (the core counts it as theirs)."""
        ticket = self.core.release(_now_ms())
        if ticket is None:
            return
        future = self.waiters.pop(ticket, None)
        if future is not None and not future.done():
            future.set_result(None)
        # Else that waiter is giving up in this same instant: its own cleanup finds the
        # ticket no longer waiting and passes the slot on (`Admission._enter`).


class Admission:
    """The queues of one gateway, by deployment id."""

    def __init__(self, *, max_queue: int = 1024, starvation_ms: int = 10_000) -> None:
        self.max_queue = max_queue
        self.starvation_ms = starvation_ms
        self._queues: dict[str, _Queue] = {}

    def configure(self, limits: Mapping[str, int | None]) -> None:
        """Sets each deployment's concurrency limit (None: no limit, no queue). On a reload,
        a changed limit applies to the existing queue, so waiters keep their places."""
        for key, limit in limits.items():
            queue = self._queues.get(key)
            if limit is None:
                self._queues.pop(key, None)
            elif queue is None:
                self._queues[key] = _Queue(limit, self.max_queue, self.starvation_ms)
            else:
                queue.core.set_limit(limit)

    def limited(self, key: str) -> bool:
        """Whether the deployment has a concurrency limit (and so a queue)."""
        return key in self._queues

    def load(self, key: str) -> tuple[int, int]:
        """(running, waiting) at one deployment; (0, 0) when it has no limit."""
        queue = self._queues.get(key)
        return queue.core.load() if queue else (0, 0)

    @contextlib.asynccontextmanager
    async def slot(
        self, key: str, *, tenant: str, priority: int, timeout_s: float
    ) -> AsyncIterator[float]:
        """Holds one of the deployment's slots for the body; yields the seconds it waited."""
        queue = self._queues.get(key)
        if queue is None:
            yield 0.0
            return
        waited = await self._enter(queue, tenant, priority, timeout_s)
        try:
            yield waited
        finally:
            queue.release()

    async def _enter(self, queue: _Queue, tenant: str, priority: int, timeout_s: float) -> float:
        ticket = queue.core.acquire(tenant, priority, _now_ms())
        if ticket == 0:
            return 0.0
        if ticket < 0:
            raise QueueFull("the deployment's queue is full", headers={"Retry-After": "1"})
        started = time.perf_counter()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.waiters[ticket] = future
        try:
            await asyncio.wait_for(future, timeout_s)
        except BaseException as exc:
            queue.waiters.pop(ticket, None)
            if not queue.core.cancel(ticket):
                queue.release()  # it was handed a slot as it gave up: pass the slot on
            if isinstance(exc, TimeoutError):
                raise QueueFull(
                    f"waited {timeout_s:g} s for a free slot", headers={"Retry-After": "1"}
                ) from None
            raise
        return time.perf_counter() - started
