"""The response cache: exact and semantic, scoped by tenant, in memory, shared via Redis, or
with its exact entries in an installed plugin's store (cache/plugin_backend.py).

`await open_cache(config)` is what the pipeline calls; it returns an object with the
`ResponseCache` protocol's `lookup`/`store`/`close` plus `bypass`, `invalidate`, `stats`
and `entries` for the admin API and the CLI. Stored answers keep their original `cost`:
the pipeline records a hit at zero cost with that amount as the saving.
"""

from __future__ import annotations

import logging

from hybridfast.cache.core import MemoryCache
from hybridfast.cache.plugin_backend import PluginCache
from hybridfast.config import Config

log = logging.getLogger("hybridfast.cache")


async def open_cache(config: Config) -> MemoryCache:
    """Builds the cache the config describes, loads its snapshot (memory) or replays the
    shared stream (Redis), and logs one line saying what is on."""
    cfg = config.cache
    cache: MemoryCache
    if cfg.backend == "redis":
        from hybridfast.cache.redis_backend import RedisCache

        cache = await RedisCache.connect(config)
    elif cfg.backend == "memory":
        cache = MemoryCache(config)
    else:  # a plugin's name (the config checked that one is installed)
        cache = PluginCache(config)
    await cache.start()
    semantic = cache.semantic
    if semantic is None:
        log.info(
            "cache: exact %s (%s backend); %s",
            "on" if cfg.exact.enabled else "off",
            cache.backend,
            cache.semantic_off_reason,
        )
    else:
        verifier = semantic.verifier
        log.info(
            "cache: exact %s, semantic on with embedder %s (threshold %.2f, guards %s, %s) "
            "(%s backend)",
            "on" if cfg.exact.enabled else "off",
            semantic.embedder.name,
            semantic.threshold,
            ",".join(semantic.guards) or "none",
            f"verifier at max_error_rate {verifier.max_error_rate}" if verifier else "no verifier",
            cache.backend,
        )
    return cache


def backend_changed(old: Config, new: Config) -> bool:
    """Whether a reload selects another backend (or the plugin backend's options changed):
    then the gateway opens the new one and closes the old, and the plugin is loaded again;
    otherwise the running cache and its entries are kept."""
    return (old.cache.backend, old.cache.options) != (new.cache.backend, new.cache.options)


__all__ = ["MemoryCache", "PluginCache", "backend_changed", "open_cache"]
