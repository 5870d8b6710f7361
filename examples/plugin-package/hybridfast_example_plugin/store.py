"""`dict` (`hybridfast.cache_backends`): the cache's exact entries in a dict in this
process, with expiry and a size bound. The smallest store that has the whole interface; a
real one would put the same four calls in front of a shared store (memcached, DynamoDB...).

    cache:
      backend: dict
      options: {max_entries: 10000}
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from typing import Any

__all__ = ["DictStore"]


class DictStore:
    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.gets = self.hits = self.sets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires_at = found
        if time.monotonic() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)  # least recently used goes first
        self.hits += 1
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self.sets += 1
        self._entries[key] = (value, time.monotonic() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, pattern: str) -> int:
        doomed = [k for k in self._entries if fnmatch.fnmatchcase(k, pattern)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def close(self) -> None:
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._entries),
            "gets": self.gets,
            "hits": self.hits,
            "sets": self.sets,
        }
