"""Virtual keys inside a running gateway: the auth fallback, the model allow-list hook, and
the admin actions that keep the gateway's limits and budgets in step with the key store.

- `resolve(key)`: the caller of a key created at run time (config keys are looked up first,
  by the auth step). Answers come from a cache kept `CACHE_S` seconds, so a key revoked on
  another instance stops working there within that time; on this instance at once.
- Each active key's `rpm`/`tpm`/`max_parallel` become the rate limits of scope `key:NAME`,
  and its `budget_usd` a ledger budget of scope `key`, when the key is first seen.
- `before_route`: a key with a `models` list may only ask for those names (403
  `ERR_MODEL_NOT_ALLOWED` otherwise).
"""

from __future__ import annotations

import asyncio
import time
import weakref

from hybridfast._core import parse_usd
from hybridfast.errors import GatewayError
from hybridfast.ledger.budgets import Budget
from hybridfast.ledger.service import NativeLedger
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineRequest
from hybridfast.security.keys import KEY_PREFIX, KeyRecord, KeySpec, KeyStore, check_spec
from hybridfast.security.ratelimit import Limit
from hybridfast.security.ratelimit_hooks import limits_of
from hybridfast.types import Caller

# How long a lookup (found or not) is trusted before the database is asked again.
CACHE_S = 2.0
_MAX_CACHED = 10_000


class ModelNotAllowed(GatewayError):
    code, status = "ERR_MODEL_NOT_ALLOWED", 403
    hint = "this key may only call the models its `models` list names"


class KeyService:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._store: KeyStore | None = None
        self._opening = asyncio.Lock()
        self._cache: dict[str, tuple[KeyRecord | None, float]] = {}
        self._active: dict[str, KeyRecord] = {}  # by name: keys seen, with limits applied
        self.reserved = [k.name for k in gateway.config.keys]

    async def store(self) -> KeyStore:
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    self._store = await asyncio.to_thread(KeyStore.open, self.gateway.config.ledger)
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
            self._store = None

    # --- auth ---------------------------------------------------------------------------

    async def resolve(self, key: str) -> Caller | None:
        if not key.startswith(KEY_PREFIX):
            return None
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < CACHE_S:
            record = cached[0]
        else:
            store = await self.store()
            record = await asyncio.to_thread(store.lookup, key)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (record, now)
            if record is not None and self._active.get(record.name) != record:
                await self.apply(record)
        if record is None:
            return None
        return Caller(key_name=record.name, user=record.user, team=record.team)

    async def apply(self, record: KeyRecord) -> None:
        """Puts a key's limits and budget into the running gateway."""
        self._active[record.name] = record
        self.switch_model_check()
        limits = limits_of(self.gateway)
        if limits is not None:
            limits.set_key_limits(record.name, Limit(record.rpm, record.tpm, record.max_parallel))
        ledger = self.gateway.ledger
        if record.budget_usd is not None and isinstance(ledger, NativeLedger):
            budget = Budget("key", record.name, record.budget_window, parse_usd(record.budget_usd))
            known = {b.ident: b for b in ledger.budgets()}.get(budget.ident)
            if known is None or known.limit != budget.limit:
                await ledger.set_budget(budget)

    def _drop_cached(self, name: str) -> None:
        self._cache = {k: v for k, v in self._cache.items() if v[0] is None or v[0].name != name}

    def forget(self, name: str) -> None:
        self._active.pop(name, None)
        self.switch_model_check()
        self._drop_cached(name)
        limits = limits_of(self.gateway)
        if limits is not None:
            limits.set_key_limits(name, None)

    def switch_model_check(self) -> None:
        """The allow-list hook runs only while a key with a `models` list is in use: the
        record is applied when the key is first resolved, before its request is routed."""
        wanted = any(record.models for record in self._active.values())
        self.gateway.hooks.switch(
            "before_route", self.check_models, wanted, name="key-models", order=5
        )

    async def check_models(self, ctx: RequestContext, request: PipelineRequest) -> None:
        record = self._active.get(ctx.caller.key_name or "")
        if record is not None and record.models and request.model not in record.models:
            raise ModelNotAllowed(f"this key may not call {request.model!r}")

    # --- admin actions ------------------------------------------------------------------

    async def create(self, spec: KeySpec, actor: str) -> tuple[KeyRecord, str]:
        check_spec(spec, self.reserved)
        store = await self.store()
        record, key = await asyncio.to_thread(store.create, spec, actor)
        await self.apply(record)
        return record, key

    async def rotate(self, name: str, grace_s: float, actor: str) -> tuple[KeyRecord, str]:
        store = await self.store()
        record, key = await asyncio.to_thread(store.rotate, name, grace_s, actor)
        self._drop_cached(name)  # the old key's cached answer must not outlive its grace
        await self.apply(record)
        return record, key

    async def revoke(self, name: str, actor: str) -> KeyRecord:
        store = await self.store()
        record = await asyncio.to_thread(store.revoke, name, actor)
        self.forget(name)
        return record


_SERVICES: weakref.WeakKeyDictionary[Gateway, KeyService] = weakref.WeakKeyDictionary()


def service_of(gateway: Gateway) -> KeyService:
    service = _SERVICES.get(gateway)
    if service is None:
        service = _SERVICES[gateway] = KeyService(gateway)
    return service


async def resolve_runtime_key(gateway: Gateway, key: str) -> Caller | None:
    """The auth step's fallback for keys that are not in the config."""
    return await service_of(gateway).resolve(key)


def install(gateway: Gateway) -> None:
    service_of(gateway).switch_model_check()  # off until a key with a model list appears
