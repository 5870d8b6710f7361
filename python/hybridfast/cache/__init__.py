"""The response cache. `open_cache(config)` is what the pipeline calls; until the exact and
semantic cache lands, nothing is cached."""

from __future__ import annotations

from hybridfast.config import Config
from hybridfast.types import CacheHit, Caller, ChatAnswer, ChatRequest


class NoCache:
    async def lookup(self, request: ChatRequest, caller: Caller) -> CacheHit | None:
        return None

    async def store(self, request: ChatRequest, caller: Caller, answer: ChatAnswer) -> None:
        pass

    async def close(self) -> None:
        pass


async def open_cache(config: Config) -> NoCache:
    return NoCache()
