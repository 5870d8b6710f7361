"""Single-flight: identical requests in flight at once make one upstream call.

When a request's exact cache key (same tenant scope, same model, same messages and sampling
parameters — the key the exact cache uses) matches one already on its way upstream, the newcomer
waits for that answer instead of calling the upstream again. The first caller (the leader) runs
the whole pipeline; followers get its answer.

A follower never inherits what was the leader's own business: if the leader fails (its budget,
its deadline, an upstream error) or its client goes away, every follower runs on its own, as if
it had arrived alone. Only a successful answer is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _LeaderGone(Exception):
    """The leader did not produce an answer to share: followers call on their own."""


class SingleFlight(Generic[T]):
    """One in-flight call per key; callers of the same key share its successful result."""

    __slots__ = ("_inflight",)

    def __init__(self) -> None:
        self._inflight: dict[bytes, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, key: bytes, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result and whether this caller made the call (False: it shared another's)."""
        while True:
            pending = self._inflight.get(key)
            if pending is None:
                return await self._lead(key, call), True
            try:
                # shield: a follower that goes away must not cancel the leader's future.
                return await asyncio.shield(pending), False
            except _LeaderGone:
                continue  # lead (or follow a newer leader) ourselves

    async def _lead(self, key: bytes, call: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await call()
        except BaseException:
            future.set_exception(_LeaderGone())
            future.exception()  # retrieved: no "never retrieved" warning when nobody followed
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]
