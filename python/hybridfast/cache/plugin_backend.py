"""`cache.backend: NAME`: exact entries kept by an installed plugin (an entry point of the
group `hybridfast.cache_backends`; docs/extensibility.md).

The plugin is a key-value store and nothing more; the gateway keeps deciding what is cached,
for whom, and for how long (keys, tenant scopes, TTLs, guards). It is built once, when the
config is loaded, with `cache.options` as keyword arguments, and has

    async def get(key: str) -> bytes | None
    async def set(key: str, value: bytes, ttl_s: float) -> None
    async def delete(pattern: str) -> int      # glob: `*` matches any run of characters
    async def close() -> None                  # optional
    def stats() -> dict                        # optional, shown by /admin/cache

(plain methods work too). Keys are `<model hash>:<tenant hash>:<exact key hex>` (hex digits
and colons only), so invalidating a model, a tenant or one key is one pattern. Semantic
entries stay in this process's native index, as with the memory backend.

A plugin cannot hurt the gateway: one that does not load leaves the gateway answering
without exact cache entries; a call that raises is a miss (or an entry not kept), logged at
most once every 10 s and counted in `hybridfast_plugin_errors_total`; a stored value that
does not decode, or belongs to another model or tenant, is a miss, never another tenant's
answer.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

from hybridfast import entrypoints
from hybridfast.cache.core import ExactEntry, MemoryCache, decode_exact, encode_exact
from hybridfast.cache.metrics import INVALIDATIONS
from hybridfast.config import Config
from hybridfast.errors import GatewayError
from hybridfast.redact import scrub_with

log = logging.getLogger("hybridfast.cache")

REQUIRED = ("get", "set", "delete")


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class PluginNotLoaded(RuntimeError):
    pass


class StoreFailed(RuntimeError):
    """A store call that raised, as the log line tells it (without the plugin's options)."""


def scrub(text: str, options: dict[str, Any]) -> str:
    """Without the string options (a token, a URL with a password): the plugin's messages
    go to logs and /admin/plugins."""
    return scrub_with(text, [v for v in options.values() if isinstance(v, str)])


def build_store(name: str, options: dict[str, Any]) -> tuple[Any, str | None]:
    """The store the plugin `name` builds with `options`, or None and why not."""
    try:
        factory = entrypoints.load(entrypoints.CACHE_BACKENDS, name)
        store = factory(**options)
    except entrypoints.PluginError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"cannot build it: {type(exc).__name__}: {scrub(str(exc), options)}"
    missing = [a for a in REQUIRED if not callable(getattr(store, a, None))]
    if missing:
        return None, f"what it built has no {', '.join(missing)}"
    return store, None


class PluginCache(MemoryCache):
    """The memory cache with its exact entries in a plugin's store."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.backend = self.plugin = config.cache.backend
        self.kv, self.error = build_store(self.plugin, config.cache.options)
        if self.kv is None:
            self._not_loaded(self.error or "")
        else:
            log.info("cache: backend plugin %s loaded", self.plugin)

    def scrub(self, text: str) -> str:
        return scrub(text, self.cfg.options)

    def _not_loaded(self, why: str) -> None:
        entrypoints.PLUGIN_ERRORS.inc((entrypoints.CACHE_BACKENDS, self.plugin))
        log.error(
            "cache: backend plugin %s not loaded (answering without exact entries): %s",
            self.plugin,
            why,
        )

    def _ready(self) -> Any:
        if self.kv is None:
            raise PluginNotLoaded(f"the cache backend plugin {self.plugin!r} is not loaded")
        return self.kv

    @staticmethod
    def name_of(key: bytes, model: str, tenant: str) -> str:
        return f"{_short(model)}:{_short(tenant)}:{key.hex()}"

    # -- exact entries: the plugin's store ------------------------------------------------

    async def _exact_get(self, key: bytes, model: str, tenant: str) -> ExactEntry | None:
        raw = await _result(self._ready().get(self.name_of(key, model, tenant)))
        if raw is None:
            return None
        entry = decode_exact(bytes(raw))
        if entry.model != model or entry.tenant != tenant:
            # A store that mixed keys up: a miss, never another tenant's answer.
            raise ValueError(f"the entry under {key.hex()} belongs to another scope")
        return entry

    async def _exact_put(self, key: bytes, entry: ExactEntry, coarse: int, now: float) -> None:
        name = self.name_of(key, entry.model, entry.tenant)
        await _result(self._ready().set(name, encode_exact(entry), self.cfg.exact.ttl_s))

    def _store_failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, PluginNotLoaded):
            super()._store_failed(what, exc)
            return
        entrypoints.PLUGIN_ERRORS.inc((entrypoints.CACHE_BACKENDS, self.plugin))
        why = f"{type(exc).__name__}: {self.scrub(str(exc))}"[:300]
        self.error = f"{what}: {why}"
        super()._store_failed(what, StoreFailed(why))  # the log line, scrubbed too

    # -- operator actions -----------------------------------------------------------------

    async def invalidate(
        self,
        *,
        key: bytes | None = None,
        model: str | None = None,
        tenant: str | None = None,
        everything: bool = False,
    ) -> int:
        # The semantic entries (and the empty local exact table) first, as the memory
        # backend drops them; then the store's exact entries by pattern.
        n = await super().invalidate(key=key, model=model, tenant=tenant, everything=everything)
        if everything:
            pattern = "*"
        elif key is not None:
            pattern = f"*:*:{key.hex()}"
        else:
            m = _short(model) if model is not None else "*"
            t = _short(tenant) if tenant is not None else "*"
            pattern = f"{m}:{t}:*"
        if self.kv is None:
            return n  # nothing was kept
        try:
            removed = int(await _result(self.kv.delete(pattern)))
        except Exception as exc:
            self._store_failed("invalidate", exc)
            raise GatewayError(
                f"the cache backend plugin {self.plugin!r} failed to delete entries "
                f"({type(exc).__name__})",
                code="ERR_CACHE_BACKEND",
                status=503,
                hint="the gateway log has the details; retry when the store is back",
            ) from None
        INVALIDATIONS.inc((), removed)
        return n + removed

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        return []  # exact entries live in the plugin's store, which need not list them

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["exact"]["entries"] = None  # in the plugin's store
        own: Any = None
        stats = getattr(self.kv, "stats", None)
        if callable(stats):
            try:
                own = stats()
            except Exception as exc:
                own = {"error": f"{type(exc).__name__}: {exc}"}
        out["plugin"] = {
            "name": self.plugin,
            "loaded": self.kv is not None,
            "error": self.error,
            "stats": own,
        }
        return out

    async def close(self) -> None:
        await super().close()
        close = getattr(self.kv, "close", None)
        if close is None:
            return
        try:
            await _result(close())
        except Exception:  # its own resources; the gateway's shutdown goes on
            log.exception("cache: backend plugin %s failed to close", self.plugin)
