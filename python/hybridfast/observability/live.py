"""The live feed: per-second aggregates of the requests this process answered, for the
dashboard (`GET /admin/live`, server-sent events).

One `LiveAggregator` per process: `add()` folds a finished request into the current
second's bucket (a few additions); a single ticker task closes the bucket once a second,
encodes its summary once, and wakes every connected client with the same bytes. A client
costs one `await` and one write per second, whatever the traffic.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from hybridfast._core import PICODOLLARS_PER_USD
from hybridfast.observability.record import RequestRecord

HISTORY_S = 300  # seconds of history a new client receives first
_MAX_SAMPLES = 4096  # latency samples kept per second for the percentiles


class _Bucket:
    __slots__ = (
        "cache_hits",
        "cost_picos",
        "errors",
        "input_tokens",
        "latencies",
        "lookups",
        "output_tokens",
        "requests",
        "second",
    )

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_picos = 0
        self.cache_hits = 0
        self.lookups = 0
        self.latencies: list[float] = []

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "ts": self.second,
            "requests": self.requests,
            "errors": self.errors,
            "latency_p50_ms": _quantile(lat, 0.5),
            "latency_p99_ms": _quantile(lat, 0.99),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_picos / PICODOLLARS_PER_USD,
            "cache_hit_rate": (self.cache_hits / self.lookups) if self.lookups else None,
        }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return round(sorted_values[index], 3)


class LiveAggregator:
    """Per-second aggregates and the clients waiting for them."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._current = _Bucket(int(clock()))
        self.history: collections.deque[bytes] = collections.deque(maxlen=HISTORY_S)
        self._tick: asyncio.Future[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self.clients = 0

    def add(self, record: RequestRecord) -> None:
        second = int(self._clock())
        bucket = self._current
        if second != bucket.second:
            self._close(second)
            bucket = self._current
        bucket.requests += 1
        if record.status >= 400:
            bucket.errors += 1
        bucket.input_tokens += record.input_tokens
        bucket.output_tokens += record.output_tokens
        bucket.cost_picos += record.cost_picos
        if record.cache != "bypass":
            bucket.lookups += 1
            if record.cache != "miss":
                bucket.cache_hits += 1
        if len(bucket.latencies) < _MAX_SAMPLES:
            bucket.latencies.append(record.latency_ms)

    def _close(self, now_second: int) -> bytes | None:
        """Ends the current bucket (and any empty seconds since) if its second is over."""
        bucket = self._current
        if now_second <= bucket.second:
            return None
        line = orjson.dumps(bucket.summary())
        self.history.append(line)
        # Quiet seconds are real data points too (zero traffic), up to the history length.
        for second in range(bucket.second + 1, min(now_second, bucket.second + HISTORY_S)):
            line = orjson.dumps(_Bucket(second).summary())
            self.history.append(line)
        self._current = _Bucket(now_second)
        return line

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self._clock()
            await asyncio.sleep(max(0.0, (int(now) + 1) - now + 0.001))
            self._close(int(self._clock()))
            tick, self._tick = self._tick, loop.create_future()
            if tick is not None and not tick.done() and self.history:
                tick.set_result(self.history[-1])

    def start(self) -> None:
        if self._task is None:
            self._tick = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._ticker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._tick is not None and not self._tick.done():
            self._tick.cancel()

    async def follow(self, backfill: int = 60) -> AsyncIterator[bytes]:
        """The last `backfill` seconds, then each second's summary as it closes."""
        self.start()
        for line in list(self.history)[-backfill:] if backfill > 0 else []:
            yield line
        self.clients += 1
        try:
            while True:
                tick = self._tick
                assert tick is not None
                yield await asyncio.shield(tick)
        finally:
            self.clients -= 1
