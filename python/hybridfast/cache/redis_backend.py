"""`cache.backend: redis`: several gateway processes share one cache.

- Exact entries are plain Redis keys, `<prefix>:x:<model hash>:<tenant hash>:<key>`, with
  the TTL as the key's expiry: every process reads and writes the same entries, and
  invalidation by model or tenant is a SCAN over a key pattern.
- Semantic entries are replicated, not fetched: a store appends an `add` event (entry id,
  scope, vector, payload, expiry) to the Redis stream `<prefix>:events`; every process
  tails the stream into its own native index, so a semantic lookup is a local index search
  with no network round trip. A process that starts later replays the stream (trimmed to
  about twice `semantic.max_entries`) and so starts warm. Invalidations travel as events
  too (`del`, `scope`, `clear`), in order with the adds.

Why not keep vectors in Redis and search there (RediSearch): it needs Redis Stack, costs a
network round trip per lookup, and would bypass the guards and the tenant partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

import msgspec
import numpy as np

from hybridfast.cache import keys as K
from hybridfast.cache.core import ExactEntry, MemoryCache, decode_exact, encode_exact
from hybridfast.cache.metrics import ENTRIES, INVALIDATIONS
from hybridfast.cache.semantic import Payload, decode_payload, encode_payload
from hybridfast.config import Config
from hybridfast.errors import ConfigError

log = logging.getLogger("hybridfast.cache")


class AddEvent(msgspec.Struct, array_like=True, tag="add"):
    id: int
    coarse: int
    expires_at: float
    vector: bytes
    payload: bytes


class DelEvent(msgspec.Struct, array_like=True, tag="del"):
    ids: list[int]


class ScopeEvent(msgspec.Struct, array_like=True, tag="scope"):
    model: str | None
    tenant: str | None


class ClearEvent(msgspec.Struct, array_like=True, tag="clear"):
    pass


Event = AddEvent | DelEvent | ScopeEvent | ClearEvent
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(Event)


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class RedisCache(MemoryCache):
    backend = "redis"

    def __init__(self, config: Config, client: Any) -> None:
        super().__init__(config)
        self.redis = client
        # Its own connection for the blocking stream read, so lookups never queue behind it.
        import redis.asyncio as aioredis

        self._reader_client = aioredis.Redis.from_url(config.cache.redis_url)
        self.prefix = config.cache.redis_prefix
        self.stream = f"{self.prefix}:events"
        self._last_id = "0-0"
        self._own: set[bytes] = set()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._maxlen = max(1000, 2 * config.cache.semantic.max_entries)

    @classmethod
    async def connect(cls, config: Config) -> RedisCache:
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(config.cache.redis_url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise ConfigError(
                f"cache.redis_url: cannot reach Redis ({type(exc).__name__})",
                hint="start Redis or set cache.backend: memory",
            ) from None
        return cls(config, client)

    async def start(self) -> None:
        if self.semantic is not None:
            await self._replay()
            self._reader = asyncio.create_task(self._tail())

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            # A blocking XREAD interrupted mid-read must not hold shutdown up.
            await asyncio.wait({self._reader}, timeout=2.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                if self._reader.done():
                    self._reader.result()
            self._reader = None
        await self._reader_client.aclose()
        await self.redis.aclose()

    # -- exact entries: Redis keys --------------------------------------------------------

    def _name(self, key: bytes, model: str, tenant: str) -> str:
        return f"{self.prefix}:x:{_short(model)}:{_short(tenant)}:{key.hex()}"

    async def _exact_get(self, key: bytes, model: str, tenant: str) -> ExactEntry | None:
        raw = await self.redis.get(self._name(key, model, tenant))
        return decode_exact(raw) if raw is not None else None

    async def _exact_put(self, key: bytes, entry: ExactEntry, coarse: int, now: float) -> None:
        await self.redis.set(
            self._name(key, entry.model, entry.tenant),
            encode_exact(entry),
            px=max(1, int(self.cfg.exact.ttl_s * 1000)),
        )

    async def _unlink(self, pattern: str) -> int:
        n = 0
        batch: list[bytes] = []
        async for name in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 500:
                n += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            n += await self.redis.unlink(*batch)
        return int(n)

    # -- semantic entries: replicated through the stream ----------------------------------

    async def _semantic_add(
        self,
        entry_id: int,
        vector: Any,
        payload: Payload,
        coarse: int,
        expires_at: float,
        now: float,
    ) -> None:
        await super()._semantic_add(entry_id, vector, payload, coarse, expires_at, now)
        event = AddEvent(
            entry_id,
            coarse,
            expires_at,
            np.asarray(vector, dtype=np.float32).tobytes(),
            encode_payload(payload),
        )
        try:
            await self._publish(event)
        except Exception as exc:  # the entry still serves this process
            self._store_failed("replicating a semantic entry", exc)

    async def _publish(self, event: Event) -> None:
        msg_id = await self.redis.xadd(
            self.stream, {"e": _ENC.encode(event)}, maxlen=self._maxlen, approximate=True
        )
        self._own.add(msg_id if isinstance(msg_id, bytes) else str(msg_id).encode())

    def _apply(self, event: Event, now: float) -> None:
        semantic = self.semantic
        assert semantic is not None
        if isinstance(event, AddEvent):
            if event.expires_at <= now:
                return
            payload = decode_payload(event.payload)
            vector = np.frombuffer(event.vector, dtype=np.float32)
            if vector.shape[0] != semantic.embedder.dimensions:
                return  # written by a process with another embedder
            self.scopes[event.coarse] = (payload.model, payload.tenant)
            semantic.add(event.id, vector, payload, event.coarse, event.expires_at, now)
        elif isinstance(event, DelEvent):
            for entry_id in event.ids:
                semantic.remove(entry_id)
        elif isinstance(event, ScopeEvent):
            self._drop_local_scopes(event.model, event.tenant)
        else:
            semantic.clear()
            self.scopes.clear()

    def _drop_local_scopes(self, model: str | None, tenant: str | None) -> int:
        n = 0
        for coarse, (m, t) in list(self.scopes.items()):
            if (model is None or m == model) and (tenant is None or t == tenant):
                if self.semantic is not None:
                    n += self.semantic.remove_coarse(coarse)
                del self.scopes[coarse]
        return n

    def _apply_batch(self, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        now = time.time()
        for msg_id, fields in entries:
            mid = msg_id if isinstance(msg_id, bytes) else str(msg_id).encode()
            self._last_id = mid.decode()
            if mid in self._own:
                self._own.discard(mid)
                continue
            try:
                event = _DEC.decode(fields[b"e"])
            except (msgspec.DecodeError, KeyError):
                log.warning("cache: skipping a malformed event %s on %s", mid, self.stream)
                continue
            self._apply(event, now)
        self._update_gauges()

    async def _replay(self) -> None:
        start = "-"
        while True:
            entries = await self.redis.xrange(self.stream, min=start, count=1000)
            if not entries:
                break
            self._apply_batch(entries)
            start = f"({self._last_id}"
        log.info(
            "cache: %d semantic entries replayed from %s", len(self.semantic or ()), self.stream
        )

    async def _tail(self) -> None:
        from redis.exceptions import RedisError

        while not self._closing:
            try:
                found: Any = await self._reader_client.xread(
                    {self.stream: self._last_id}, block=1000, count=500
                )
                for _, entries in found:
                    self._apply_batch(entries)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("cache: reading %s failed (%s); retrying", self.stream, exc)
                await asyncio.sleep(1.0)

    # -- operator actions -----------------------------------------------------------------

    async def invalidate(
        self,
        *,
        key: bytes | None = None,
        model: str | None = None,
        tenant: str | None = None,
        everything: bool = False,
    ) -> int:
        if everything:
            n = await self._unlink(f"{self.prefix}:x:*")
            if self.semantic is not None:
                n += self.semantic.clear()
                self.scopes.clear()
                await self._publish(ClearEvent())
        elif key is not None:
            n = await self._unlink(f"{self.prefix}:x:*:*:{key.hex()}")
            if self.semantic is not None:
                entry_id = K.entry_id(key)
                n += int(self.semantic.remove(entry_id))
                await self._publish(DelEvent([entry_id]))
        elif model is not None or tenant is not None:
            m = _short(model) if model is not None else "*"
            t = _short(tenant) if tenant is not None else "*"
            n = await self._unlink(f"{self.prefix}:x:{m}:{t}:*")
            n += self._drop_local_scopes(model, tenant)
            if self.semantic is not None:
                await self._publish(ScopeEvent(model, tenant))
        else:
            raise ValueError("say what to invalidate: everything, key, model or tenant")
        INVALIDATIONS.inc((), n)
        self._update_gauges()
        return n

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        return []  # exact entries live in Redis; `SCAN <prefix>:x:*` lists them

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["exact"]["entries"] = None  # in Redis, shared
        out["redis"] = {"prefix": self.prefix, "stream": self.stream, "last_event": self._last_id}
        return out

    def _update_gauges(self) -> None:
        ENTRIES.labels("semantic").set(len(self.semantic) if self.semantic else 0)
