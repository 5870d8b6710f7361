"""The response cache the pipeline calls: `lookup` before routing, `store` after a
complete answer. Exact entries first (a hash of everything that changes the answer), then
the semantic index (same scope, similar meaning, every guard passed).

`MemoryCache` keeps everything in this process (native tables and index) and snapshots it
to disk; `RedisCache` (cache/redis_backend.py) shares exact entries through Redis keys and
replicates semantic entries through a Redis stream into each process's native index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

import msgspec

from hybridfast._core import ExactTable, StorageError
from hybridfast.cache import keys as K
from hybridfast.cache import snapshot
from hybridfast.cache.metrics import (
    ENTRIES,
    EVICTIONS,
    INVALIDATIONS,
    LOOKUP_SECONDS,
    LOOKUPS,
    STORES,
)
from hybridfast.cache.semantic import Payload, SemanticIndex, choose_embedder
from hybridfast.config import Config
from hybridfast.types import CacheHit, CacheResult, Caller, ChatAnswer, ChatRequest

log = logging.getLogger("hybridfast.cache")


class ExactEntry(msgspec.Struct, array_like=True):
    model: str
    tenant: str
    answer: ChatAnswer


_ENCODER = msgspec.msgpack.Encoder()
_EXACT = msgspec.msgpack.Decoder(ExactEntry)

# A finished answer is worth keeping unless it is empty or the upstream failed.
_UNCACHEABLE_FINISH = frozenset({"error", "cancelled"})
_PURGE_EVERY = 1000
# The lookup metrics' label sets, made once (not a `.labels()` object per lookup).
_LABELS: dict[str, tuple[str]] = {r: (r,) for r in ("hit", "semantic-hit", "miss", "bypass")}
_BYPASS = _LABELS["bypass"]
_KIND_EXACT, _KIND_SEMANTIC = ("exact",), ("semantic",)  # store, eviction, size metrics


def encode_exact(entry: ExactEntry) -> bytes:
    return _ENCODER.encode(entry)


def decode_exact(raw: bytes) -> ExactEntry:
    return _EXACT.decode(raw)


class MemoryCache:
    """In-process exact + semantic cache (the default backend)."""

    backend = "memory"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cfg = config.cache
        self.exact = ExactTable(self.cfg.exact.max_entries)
        choice = choose_embedder(self.cfg.semantic)
        self.semantic = (
            SemanticIndex(self.cfg.semantic, choice.embedder) if choice.embedder else None
        )
        self.semantic_off_reason = choice.off_reason
        # Coarse scope → (model, tenant): what the admin API invalidates by.
        self.scopes: dict[int, tuple[str, str]] = {}
        self.counts: dict[str, int] = {"hit": 0, "semantic-hit": 0, "miss": 0, "bypass": 0}
        self._stores = 0
        self._inline_embed = self.semantic is not None and self.semantic.embedder.name == "hashing"
        self._snapshot_task: asyncio.Task[None] | None = None
        self._last_store_warning = -1e9
        self.snapshot_prefix = snapshot.resolve_path(config)

    # -- the pipeline's protocol ----------------------------------------------------------

    def ticket(self, request: ChatRequest, caller: Caller) -> K.CacheTicket:
        """The request's cache decision and keys, made once for its lookup and its store."""
        return K.CacheTicket(request, caller, self.cfg)

    def bypass(self, request: ChatRequest) -> bool:
        """True when this request is neither looked up nor stored (header `bypass`)."""
        return not K.policy(request, self.cfg).store

    def note_bypass(self) -> None:
        self.counts["bypass"] += 1
        LOOKUPS.inc(_BYPASS)

    async def lookup(
        self, request: ChatRequest, caller: Caller, ticket: K.CacheTicket | None = None
    ) -> CacheHit | None:
        ticket = ticket if ticket is not None else self.ticket(request, caller)
        if not ticket.lookup:
            self.note_bypass()  # nothing looked up: no time to record
            return None
        started = time.perf_counter()
        result: CacheResult = "miss"
        hit: CacheHit | None = None
        try:
            tenant = ticket.tenant
            if self.cfg.exact.enabled:
                try:
                    entry = await self._exact_get(ticket.key, request.model, tenant)
                except Exception as exc:  # a shared store that is down is a miss, not an error
                    self._store_failed("lookup", exc)
                    entry = None
                if entry is not None:
                    result = "hit"
                    hit = CacheHit(answer=entry.answer, kind="hit", similarity=1.0)
                    return hit
            if self.semantic is not None:
                target = ticket.target(self.cfg.semantic.text)
                if target is not None:
                    try:
                        vector = ticket.vector = await self._embed(target.text)
                    except Exception as exc:
                        self._semantic_failed(exc)
                        return None
                    found = self.semantic.search(target.scope, target.text, vector)
                    if found is not None:
                        result = "semantic-hit"
                        hit = CacheHit(
                            answer=found.payload.answer,
                            kind="semantic-hit",
                            similarity=round(found.similarity, 4),
                        )
                        return hit
            return None
        finally:
            self.counts[result] += 1
            labels = _LABELS[result]
            LOOKUPS.inc(labels)
            LOOKUP_SECONDS.observe(labels, time.perf_counter() - started)

    async def store(
        self,
        request: ChatRequest,
        caller: Caller,
        answer: ChatAnswer,
        ticket: K.CacheTicket | None = None,
    ) -> None:
        ticket = ticket if ticket is not None else self.ticket(request, caller)
        if not ticket.store:
            return
        if (
            not answer.content and not answer.tool_calls
        ) or answer.finish_reason in _UNCACHEABLE_FINISH:
            return
        tenant = ticket.tenant
        key = ticket.key
        coarse = K.coarse_scope(request.model, tenant)
        self.scopes[coarse] = (request.model, tenant)
        now = time.time()
        if self.cfg.exact.enabled:
            try:
                await self._exact_put(key, ExactEntry(request.model, tenant, answer), coarse, now)
                STORES.inc(_KIND_EXACT)
            except Exception as exc:
                self._store_failed("store", exc)
        if self.semantic is not None:
            target = ticket.target(self.cfg.semantic.text)
            if target is not None:
                try:
                    vector = ticket.vector
                    if vector is None:  # not looked up (no-cache): embed it now
                        vector = await self._embed(target.text)
                except Exception as exc:
                    self._semantic_failed(exc)
                    return
                payload = Payload(target.text, request.model, tenant, target.scope, answer)
                await self._semantic_add(
                    K.entry_id(key), vector, payload, coarse, now + self.cfg.semantic.ttl_s, now
                )
                STORES.inc(_KIND_SEMANTIC)
        self._stores += 1
        if self._stores % _PURGE_EVERY == 0:
            self.purge_expired()
        self._update_gauges()

    async def close(self) -> None:
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshot_task
            self._snapshot_task = None
        if self.snapshot_prefix:
            try:
                await asyncio.to_thread(self.save_snapshot)
            except (StorageError, OSError) as exc:
                log.warning("cache: snapshot at shutdown failed: %s", exc)

    # -- operator actions -----------------------------------------------------------------

    async def invalidate(
        self,
        *,
        key: bytes | None = None,
        model: str | None = None,
        tenant: str | None = None,
        everything: bool = False,
    ) -> int:
        """Drops entries: all of them, one exact key (and its semantic twin), or every
        entry of a model and/or tenant. Returns how many entries went."""
        if everything:
            n = self.exact.clear() + (self.semantic.clear() if self.semantic else 0)
        elif key is not None:
            n = int(self.exact.remove(key))
            if self.semantic is not None:
                n += int(self.semantic.remove(K.entry_id(key)))
        elif model is not None or tenant is not None:
            n = 0
            for coarse, (m, t) in list(self.scopes.items()):
                if (model is None or m == model) and (tenant is None or t == tenant):
                    n += len(self.exact.remove_scope(coarse))
                    if self.semantic is not None:
                        n += self.semantic.remove_coarse(coarse)
                    del self.scopes[coarse]
        else:
            raise ValueError("say what to invalidate: everything, key, model or tenant")
        INVALIDATIONS.inc((), n)
        self._update_gauges()
        return n

    def invalidate_request_key(self, request: ChatRequest, caller: Caller) -> bytes:
        """The exact key a request is filed under (for invalidating one request)."""
        return K.exact_key(request, K.tenant_of(caller, self.cfg.shared))

    def purge_expired(self) -> int:
        n = len(self.exact.purge_expired())
        if self.semantic is not None:
            n += self.semantic.purge_expired()
        return n

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently used exact entries (key, model, tenant, answer preview)."""
        out = []
        for key in reversed(self.exact.keys()[-limit:]):
            found = self.exact.peek(key)
            if found is None:
                continue
            raw, expires_at, _ = found
            entry = decode_exact(raw)
            out.append(
                {
                    "key": key.hex(),
                    "model": entry.model,
                    "tenant": entry.tenant,
                    "expires_at": expires_at,
                    "preview": entry.answer.content[:80],
                }
            )
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "lookups": dict(self.counts),
            "exact": {
                "enabled": self.cfg.exact.enabled,
                "entries": len(self.exact),
                "max_entries": self.cfg.exact.max_entries,
                "evictions": self.exact.evictions,
                "expirations": self.exact.expirations,
            },
            "semantic": (
                self.semantic.stats()
                if self.semantic is not None
                else {"enabled": False, "reason": self.semantic_off_reason}
            ),
            "shared": self.cfg.shared,
        }

    # -- storage hooks (RedisCache overrides the exact ones and adds replication) ----------

    async def _exact_get(self, key: bytes, model: str, tenant: str) -> ExactEntry | None:
        raw = self.exact.get(key)
        return decode_exact(raw) if raw is not None else None

    async def _exact_put(self, key: bytes, entry: ExactEntry, coarse: int, now: float) -> None:
        evicted = self.exact.put(key, encode_exact(entry), self.cfg.exact.ttl_s, coarse, now)
        if evicted:
            EVICTIONS.inc(_KIND_EXACT, len(evicted))

    async def _semantic_add(
        self,
        entry_id: int,
        vector: Any,
        payload: Payload,
        coarse: int,
        expires_at: float,
        now: float,
    ) -> None:
        assert self.semantic is not None
        self.semantic.add(entry_id, vector, payload, coarse, expires_at, now)

    async def _embed(self, text: str) -> Any:
        assert self.semantic is not None
        vector = self.semantic.recent(text)
        if vector is None:
            embedder = self.semantic.embedder
            if self._inline_embed:
                vector = embedder.embed([text])[0]
            else:
                # A neural model takes milliseconds (GIL released): keep the loop serving.
                vector = (await asyncio.to_thread(embedder.embed, [text]))[0]
            self.semantic.remember(text, vector)
        return vector

    def _store_failed(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_store_warning > 10.0:  # one line per 10 s, not one per request
            self._last_store_warning = now
            log.warning(
                "cache: %s failed (%s: %s); answering without the cache",
                what,
                type(exc).__name__,
                exc,
            )

    def _semantic_failed(self, exc: Exception) -> None:
        """The embedder broke (weights missing or damaged): answer without semantic
        matching from now on rather than failing requests."""
        name = self.semantic.embedder.name if self.semantic else "?"
        log.error("cache: embedder %s failed (%s); semantic cache turned off", name, exc)
        self.semantic_off_reason = f"semantic cache off: embedder {name} failed ({exc})"
        self.semantic = None

    def _update_gauges(self) -> None:
        ENTRIES.set(_KIND_EXACT, len(self.exact))
        ENTRIES.set(_KIND_SEMANTIC, len(self.semantic) if self.semantic else 0)

    # -- snapshots (cache/snapshot.py: all or nothing) -----------------------------------

    def save_snapshot(self) -> None:
        """Writes the exact table, the semantic payloads and index, and the scope registry
        as one snapshot (a crash mid-save leaves the previous one whole)."""
        assert self.snapshot_prefix
        semantic = None
        if self.semantic is not None:
            embedder = [self.semantic.embedder.name, self.semantic.embedder.dimensions]
            semantic = (self.semantic.index, self.semantic.payloads, embedder)
        snapshot.save(self.snapshot_prefix, self.exact, semantic, self.scopes)

    def load_snapshot(self) -> int:
        """Loads what a previous run saved, whole; a missing or damaged part starts the
        cache empty with a warning, it never stops the gateway nor loads half a cache."""
        assert self.snapshot_prefix
        mine = None
        if self.semantic is not None:
            mine = [self.semantic.embedder.name, self.semantic.embedder.dimensions]
        try:
            loaded = snapshot.load(self.snapshot_prefix, self.cfg, mine)
        except snapshot.SnapshotDamaged as exc:
            log.warning(
                "cache: snapshot %s NOT loaded, starting with an empty cache: %s",
                self.snapshot_prefix,
                exc,
            )
            return 0
        if loaded is None:
            return 0
        self.exact, self.scopes = loaded.exact, loaded.scopes
        if self.semantic is not None and loaded.semantic is not None:
            self.semantic.index, self.semantic.payloads = loaded.semantic
        self._update_gauges()
        return len(self.exact) + (len(self.semantic) if self.semantic else 0)

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.snapshot_interval_s)
            try:
                await asyncio.to_thread(self.save_snapshot)
            except (StorageError, OSError) as exc:
                log.warning("cache: snapshot failed: %s", exc)

    async def start(self) -> None:
        if self.snapshot_prefix:
            n = await asyncio.to_thread(self.load_snapshot)
            log.info("cache: %d entries loaded from %s", n, self.snapshot_prefix)
            if self.cfg.snapshot_interval_s > 0:
                self._snapshot_task = asyncio.create_task(self._snapshot_loop())


CacheKind = Literal["hit", "semantic-hit"]
