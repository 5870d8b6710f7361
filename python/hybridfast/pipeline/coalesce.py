"""Single-flight: identical cacheable requests in flight at once make one upstream call.

When a request misses the cache and an identical one (the same exact cache key: same tenant
scope, model, messages and sampling parameters) is already on its way upstream, the newcomer
waits for that one to finish and then reads its answer from the cache, as an exact hit: one
upstream call, every caller answered, each with its own ledger line (the followers' lines cost
nothing and record what the answer saved, as any cache hit does).

Only requests the cache may answer take part (deterministic ones, under the cache's policy):
two identical requests at temperature 1 expect different answers and both go upstream. A
follower never inherits the leader's fate: if the leader fails, is refused or its client goes
away, nothing is cached, and each follower goes upstream on its own.
"""

from __future__ import annotations

import asyncio


class InFlight:
    """The cacheable requests on their way upstream, by exact cache key."""

    __slots__ = ("_leaders",)

    def __init__(self) -> None:
        self._leaders: dict[bytes, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._leaders)

    async def wait(self, key: bytes, timeout_s: float) -> bool:
        """Waits for the leader of `key` to finish; False when there is none (or it took
        longer than `timeout_s`: the caller goes upstream itself)."""
        leader = self._leaders.get(key)
        if leader is None:
            return False
        try:
            await asyncio.wait_for(leader.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def lead(self, key: bytes) -> asyncio.Event | None:
        """Registers the caller as the leader of `key`; None when another one leads."""
        if key in self._leaders:
            return None
        leader = self._leaders[key] = asyncio.Event()
        return leader

    def finish(self, key: bytes, leader: asyncio.Event) -> None:
        """The leader is done (answered, stored or failed): its followers look again."""
        if self._leaders.get(key) is leader:
            del self._leaders[key]
        leader.set()
