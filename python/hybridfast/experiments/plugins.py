"""Plugins: Python packages that add routers, guardrails, callbacks, providers or cache
backends to the gateway through entry points, one group each.

- `hybridfast.routers`: a class built with a route's `options`;
  `order(route, candidates, features, caller)` (a route's `router: NAME`).
- `hybridfast.guardrails`: a class built with `options`; `name` and `find(text) -> findings`
  (a guardrail's `plugin: NAME`).
- `hybridfast.callbacks`: a class built with `plugins.options[NAME]`;
  `async on_answer(event: dict)` (runs after every answer).
- `hybridfast.providers`: a factory called with a provider's `ProviderConfig` that returns a
  `Provider` (chat, stream; embed optional) — usually a `Provider` subclass (a provider's
  `kind: plugin`, or a model's `provider: NAME`; providers/plugin.py).
- `hybridfast.cache_backends`: a class built with `cache.options`: a key-value store with
  `get`, `set`, `delete` (`cache.backend: NAME`; cache/plugin_backend.py).

`discover()` lists every installed entry point of these groups and whether it loads and has
the interface (`hybridfast plugins list`, `GET /admin/plugins`). Callbacks run after every
answer, after the ledger line is written, with a plain dict (`EVENT_FIELDS`) — a stable
interface that does not move with the gateway's internals. They load at start and again when
the config is reloaded (a package installed meanwhile appears then), as do the provider and
cache-backend plugins the config selects. A plugin that fails to load, or raises, is
isolated: logged, counted in `hybridfast_plugin_errors_total{group,plugin}` and reported with
its last error; a callback's request is never affected, a provider's fails over to the next
deployment, a cache backend's is answered without the cache.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from hybridfast import entrypoints
from hybridfast.cache.plugin_backend import REQUIRED as REQUIRED_STORE
from hybridfast.cache.plugin_backend import build_store
from hybridfast.config import BUILTIN_CACHE_BACKENDS, Config, PluginsConfig
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.providers.plugin import PluginProvider

log = logging.getLogger("hybridfast.plugins")

CALLBACKS = "hybridfast.callbacks"
GROUPS: dict[str, str] = {
    "hybridfast.routers": "order(route, candidates, features, caller) -> candidates",
    "hybridfast.guardrails": "name; find(text) -> list[Finding]",
    CALLBACKS: "async on_answer(event: dict) -> None",
    entrypoints.PROVIDERS: "factory(ProviderConfig) -> Provider: chat, stream[, embed]",
    entrypoints.CACHE_BACKENDS: "class(**options): get, set, delete[, close, stats]",
}
# The attributes a loaded object must have, per group.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "hybridfast.routers": ("order",),
    "hybridfast.guardrails": ("find",),
    CALLBACKS: ("on_answer",),
    # A provider plugin may be a plain factory function: only a class can be checked here
    # (what a function returns is checked when the config builds it).
    entrypoints.PROVIDERS: ("chat", "stream"),
    entrypoints.CACHE_BACKENDS: REQUIRED_STORE,
}
_FACTORY_GROUPS = frozenset({entrypoints.PROVIDERS})
EVENT_FIELDS = (
    "request_id",
    "route",
    "endpoint",
    "deployment",
    "status",
    "error_code",
    "cache",
    "input_tokens",
    "output_tokens",
    "cost_picos",
    "latency_ms",
    "key",
    "user",
    "team",
)

PLUGIN_ERRORS = entrypoints.PLUGIN_ERRORS


@dataclass
class PluginInfo:
    group: str
    name: str
    value: str  # module:attr
    package: str | None  # the distribution that installed it
    version: str | None
    loaded: bool = False
    error: str | None = None


def _describe(ep: EntryPoint, group: str) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(
        group,
        ep.name,
        ep.value,
        dist.metadata["Name"] if dist is not None else None,
        dist.version if dist is not None else None,
    )


def load(ep: EntryPoint, info: PluginInfo) -> Any:
    """The entry point's object, or None with `info.error` saying why (never raises)."""
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin package: reported, never fatal
        info.error = f"cannot import {ep.value}: {type(exc).__name__}: {exc}"
        return None
    if info.group in _FACTORY_GROUPS and not inspect.isclass(obj):
        if not callable(obj):
            info.error = f"{ep.value} is not callable (see the {info.group} interface)"
            return None
        info.loaded = True
        return obj
    missing = [a for a in _REQUIRED[info.group] if not hasattr(obj, a)]
    if missing:
        info.error = f"{ep.value} has no {', '.join(missing)} (see the {info.group} interface)"
        return None
    info.loaded = True
    return obj


def discover(groups: tuple[str, ...] = tuple(GROUPS)) -> list[PluginInfo]:
    """Every installed plugin of `groups`, loaded to check it, sorted by group and name."""
    found: list[PluginInfo] = []
    for group in groups:
        for ep in entry_points(group=group):
            info = _describe(ep, group)
            load(ep, info)
            found.append(info)
    return sorted(found, key=lambda i: (i.group, i.name))


async def build_selected(config: Config) -> list[dict[str, Any]]:
    """The provider and cache-backend plugins `config` selects, each built as `serve` builds
    it, then closed: whether it builds, and why not (`plugins list --config`)."""
    rows: list[dict[str, Any]] = []
    for settings in config.providers:
        if settings.kind != "plugin":
            continue
        provider = PluginProvider(settings)
        rows.append(
            {
                "group": entrypoints.PROVIDERS,
                "name": provider.plugin,
                "used_by": f"provider {settings.name}",
                "loaded": provider.loaded,
                "error": provider.error,
            }
        )
        await provider.close()
    if config.cache.backend not in BUILTIN_CACHE_BACKENDS:
        store, error = build_store(config.cache.backend, config.cache.options)
        rows.append(
            {
                "group": entrypoints.CACHE_BACKENDS,
                "name": config.cache.backend,
                "used_by": "cache.backend",
                "loaded": store is not None,
                "error": error,
            }
        )
        close = getattr(store, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result
    return rows


def event_of(ctx: RequestContext) -> dict[str, Any]:
    caller = ctx.caller
    return {
        "request_id": ctx.request_id,
        "route": ctx.route,
        "endpoint": ctx.endpoint,
        "deployment": ctx.deployment.id if ctx.deployment is not None else None,
        "status": ctx.status,
        "error_code": ctx.error.code if ctx.error is not None else None,
        "cache": ctx.cache,
        "input_tokens": ctx.usage.input_tokens,
        "output_tokens": ctx.usage.output_tokens,
        "cost_picos": ctx.cost,
        "latency_ms": ctx.latency_s * 1000,
        "key": caller.key_name,
        "user": caller.user,
        "team": caller.team,
    }


@dataclass
class Callback:
    info: PluginInfo
    on_answer: Callable[[dict[str, Any]], Any]
    calls: int = 0
    failures: int = 0


@dataclass
class CallbackHub:
    """The callbacks of one gateway, reloaded when its config changes."""

    gateway: Gateway
    callbacks: list[Callback] = field(default_factory=list)
    failed: list[PluginInfo] = field(default_factory=list)
    _source: PluginsConfig | None = None

    def refresh(self) -> None:
        config: Config = self.gateway.config
        if config.plugins is self._source:
            return
        self._source = config.plugins
        wanted = set(config.plugins.callbacks)
        self.callbacks, self.failed = [], []
        for ep in entry_points(group=CALLBACKS):
            if "*" not in wanted and ep.name not in wanted:
                continue
            info = _describe(ep, CALLBACKS)
            factory = load(ep, info)
            instance = _build(factory, info, config.plugins.options.get(ep.name, {}))
            if instance is None:
                PLUGIN_ERRORS.inc((CALLBACKS, ep.name))
                log.error("plugin %s (%s) not loaded: %s", ep.name, CALLBACKS, info.error)
                self.failed.append(info)
                continue
            self.callbacks.append(Callback(info, instance.on_answer))
            log.info("plugin %s (%s) loaded from %s", ep.name, CALLBACKS, ep.value)

    async def dispatch(
        self, ctx: RequestContext, _request: PipelineRequest, _answer: PipelineAnswer | None
    ) -> None:
        self.refresh()
        if not self.callbacks:
            return
        event = event_of(ctx)
        for callback in self.callbacks:
            callback.calls += 1
            try:
                result = callback.on_answer(dict(event))  # a copy: one cannot change another's
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                callback.failures += 1
                callback.info.error = f"{type(exc).__name__}: {exc}"
                PLUGIN_ERRORS.inc((CALLBACKS, callback.info.name))
                log.warning(
                    "request %s: plugin %s raised; isolated",
                    ctx.request_id,
                    callback.info.name,
                    exc_info=True,
                )

    def report(self) -> list[dict[str, Any]]:
        rows = [{**vars(c.info), "calls": c.calls, "failures": c.failures} for c in self.callbacks]
        return rows + [{**vars(i), "calls": 0, "failures": 0} for i in self.failed]


def _build(factory: Any, info: PluginInfo, options: dict[str, Any]) -> Any:
    if factory is None:
        return None
    try:
        # A class is built with its options; an object that already has on_answer is used.
        instance = factory(**options) if inspect.isclass(factory) else factory
    except Exception as exc:
        info.loaded = False
        info.error = f"cannot build {info.value}: {type(exc).__name__}: {exc}"
        return None
    return instance
