"""Providers from installed packages (`kind: plugin`, or a model whose `provider:` names an
installed plugin; docs/extensibility.md).

A package registers a factory in the entry-point group `hybridfast.providers`; it is called
once, when the config is loaded or reloaded, with the provider's `ProviderConfig` (its
`options` included) and returns a `Provider`: an object with

    async def chat(deployment, request, *, retries) -> ChatAnswer
    def stream(deployment, request, *, retries) -> AsyncIterator[list[StreamEvent]]
    async def embed(deployment, inputs, *, dimensions) -> (vectors, Usage)   # optional
    async def close() -> None                                                 # optional

A `Provider` subclass is the usual way to write one (a class is a factory).

`PluginProvider` wraps it so a plugin cannot hurt the gateway: one that is not installed,
does not import or cannot be built still lets the gateway start, and every call on it fails
like an unreachable upstream (the request falls back to the next deployment); a call that
raises anything but a `ProviderError` or a gateway error is turned into a `ProviderError`
the same way. Each failure is logged and counted in
`hybridfast_plugin_errors_total{group,plugin}`, and `/admin/plugins` shows the last one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

from hybridfast import entrypoints
from hybridfast.config import ProviderConfig
from hybridfast.errors import GatewayError
from hybridfast.providers.base import Provider, ProviderError
from hybridfast.redact import scrub_with
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, StreamEvent, Usage

log = logging.getLogger("hybridfast.plugins")

_REQUIRED = ("chat", "stream")


class PluginProvider(Provider):
    """A provider built by an installed plugin, isolated (see the module docstring)."""

    kind = "plugin"

    def __init__(self, config: ProviderConfig) -> None:
        # No HTTP client of its own (Provider.__init__ makes one): the plugin reaches its
        # upstream, or answers, itself.
        self.config = config
        self.name = config.name
        self.base_url = (config.base_url or "").rstrip("/")
        self.plugin = config.plugin or config.name
        self.impl: Any = None
        self.error: str | None = None  # why it is not loaded, or the last call that raised
        self.calls = 0
        self.failures = 0
        try:
            factory = entrypoints.load(entrypoints.PROVIDERS, self.plugin)
            impl = factory(config)
        except entrypoints.PluginError as exc:
            self._not_loaded(str(exc))
            return
        except Exception as exc:
            self._not_loaded(f"cannot build it: {type(exc).__name__}: {self.scrub(str(exc))}")
            return
        missing = [a for a in _REQUIRED if not callable(getattr(impl, a, None))]
        if missing:
            self._not_loaded(f"what it built has no {', '.join(missing)}")
            return
        self.impl = impl
        log.info("provider %s: plugin %s loaded", self.name, self.plugin)

    def scrub(self, text: str) -> str:
        """The plugin's messages go to logs and /admin/plugins: without its key, headers or
        any string option (a token, a URL with a password)."""
        config = self.config
        options = [v for v in config.options.values() if isinstance(v, str)]
        return scrub_with(text, [config.api_key or "", *config.headers.values(), *options])

    @property
    def loaded(self) -> bool:
        return self.impl is not None

    def _not_loaded(self, why: str) -> None:
        self.error = why
        entrypoints.PLUGIN_ERRORS.inc((entrypoints.PROVIDERS, self.plugin))
        log.error(
            "provider %s: plugin %s not loaded (calls to it fail over): %s",
            self.name,
            self.plugin,
            why,
        )

    def _ready(self) -> Any:
        self.calls += 1
        if self.impl is None:
            self.failures += 1
            raise ProviderError(f"{self.name}: the provider plugin {self.plugin!r} is not loaded")
        return self.impl

    def _raised(self, exc: Exception) -> ProviderError:
        self.failures += 1
        self.error = f"{type(exc).__name__}: {self.scrub(str(exc))}"[:300]
        entrypoints.PLUGIN_ERRORS.inc((entrypoints.PROVIDERS, self.plugin))
        log.warning(
            "provider %s: plugin %s raised %s; failing over", self.name, self.plugin, self.error
        )
        log.debug("provider %s: the plugin's traceback", self.name, exc_info=exc)
        return ProviderError(f"{self.name}: the provider plugin raised {self.error}")

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        impl = self._ready()
        try:
            answer: ChatAnswer = await impl.chat(deployment, request, retries=retries)
        except (ProviderError, GatewayError):
            self.failures += 1
            raise  # the plugin's own verdict: an upstream failure, or a refused request
        except Exception as exc:
            raise self._raised(exc) from None
        return answer

    async def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        impl = self._ready()
        events = None
        try:
            events = impl.stream(deployment, request, retries=retries)
            async for batch in events:
                yield batch
        except (ProviderError, GatewayError):
            self.failures += 1
            raise
        except Exception as exc:
            raise self._raised(exc) from None
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def embed(
        self,
        deployment: Deployment,
        inputs: list[str] | list[list[int]],
        *,
        dimensions: int | None,
    ) -> tuple[list[list[float]], Usage]:
        impl = self._ready()
        if not callable(getattr(impl, "embed", None)):
            return await super().embed(deployment, inputs, dimensions=dimensions)
        try:
            result: tuple[list[list[float]], Usage] = await impl.embed(
                deployment, inputs, dimensions=dimensions
            )
        except (ProviderError, GatewayError):
            self.failures += 1
            raise
        except Exception as exc:
            raise self._raised(exc) from None
        return result

    async def close(self) -> None:
        close = getattr(self.impl, "close", None)
        if close is None:
            return
        try:
            await close()
        except Exception:  # its own resources; the gateway's shutdown goes on
            log.exception("provider %s: plugin %s failed to close", self.name, self.plugin)

    def report(self) -> dict[str, Any]:
        """What `/admin/plugins` shows for this provider."""
        return {
            "provider": self.name,
            "plugin": self.plugin,
            "loaded": self.loaded,
            "calls": self.calls,
            "failures": self.failures,
            "error": self.error,
        }
