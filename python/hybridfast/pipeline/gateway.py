"""`Gateway`: the pipeline's parts (router, ledger, cache, providers, hooks), opened together,
and the in-process Python API over them. The server, the `route`/`embed` CLIs and services
that embed hybridfast all come through it.

    async with Gateway.from_config("hybridfast.yaml") as gw:
        result = await gw.chat("Hello", model="auto")
        print(result.text, result.cost_usd)
        async for event in gw.stream("Tell me a story"):
            print(event.text or "", end="")
        vectors = (await gw.embed(["a", "b"], model="minilm")).vectors

The flows themselves are in `pipeline/chat.py` and `pipeline/embeddings.py`; what a request
carries is a `RequestContext` (`pipeline/context.py`); the seams are `gw.hooks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from hybridfast import redact
from hybridfast.cache import backend_changed, open_cache
from hybridfast.config import Config, load_config
from hybridfast.deployments import build_deployments
from hybridfast.discovery import apply as apply_discovered
from hybridfast.discovery import discover
from hybridfast.embeddings.pipeline import EmbeddingEngine
from hybridfast.errors import InvalidRequest
from hybridfast.gpus import GpuPool, apply_to_router, load_nvml
from hybridfast.ledger import open_ledger
from hybridfast.pipeline.admission import Admission
from hybridfast.pipeline.attempt import Parts
from hybridfast.pipeline.chat import ChatFlow, ChatSettings, needs_of
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import input_estimate
from hybridfast.pipeline.embeddings import EmbeddingsFlow
from hybridfast.pipeline.hooks import Hooks
from hybridfast.pipeline.reconfigure import (
    Followers,
    Retirement,
    apply_budgets,
    carry_providers,
    close_router,
)
from hybridfast.pipeline.validate import check_messages
from hybridfast.pricing import configure as configure_prices
from hybridfast.providers import Provider, build_providers
from hybridfast.routing import build_router
from hybridfast.types import (
    ANONYMOUS,
    Caller,
    ChatAnswer,
    ChatRequest,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Ledger,
    RequestFeatures,
    ResponseCache,
    RoutePlan,
    Router,
    StreamEvent,
    Usage,
)


@dataclass(slots=True)
class ChatResult:
    """A finished answer from the Python API."""

    answer: ChatAnswer
    info: RequestContext

    @property
    def text(self) -> str:
        return self.answer.content

    @property
    def cost(self) -> int:
        """Picodollars."""
        return self.info.cost

    @property
    def cost_usd(self) -> str:
        return self.info.cost_usd

    @property
    def deployment(self) -> str:
        return self.info.deployment_id

    @property
    def usage(self) -> Usage:
        return self.info.usage


class ChatStream:
    """An answer as it arrives from the Python API: iterate for `StreamEvent`s (`.text`);
    `info` holds the deployment and, once the stream ended, the exact cost."""

    def __init__(
        self, events: AsyncGenerator[list[StreamEvent], None], info: RequestContext
    ) -> None:
        self._events = events
        self.info = info

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        try:
            async for batch in self._events:
                for event in batch:
                    if event.text or event.tool_calls or event.finish_reason:
                        yield event
        finally:
            await self._events.aclose()

    async def text(self) -> str:
        return "".join([e.text async for e in self if e.text])


class Gateway:
    """The parts of the pipeline and the flows over them. Open it (`async with`, or
    `await open()`) before use; `close()` flushes the ledger and closes upstream connections.
    Parts given to the constructor are used as they are; the others are built from config."""

    def __init__(
        self,
        config: Config,
        *,
        deployments: Sequence[Deployment] | None = None,
        router: Router | None = None,
        ledger: Ledger | None = None,
        cache: ResponseCache | None = None,
        providers: dict[str, Provider] | None = None,
        hooks: Hooks | None = None,
        discover: bool = False,
    ) -> None:
        self.config = config
        # Zero-config (no config file): add the local model servers that answer at open().
        self._discover = discover and deployments is None and providers is None
        if deployments is None:
            # A LiteLLM price map in config prices deployments too, not just the ledger.
            configure_prices(config.ledger.prices_file)
        self.deployments = (
            list(deployments) if deployments is not None else build_deployments(config)
        )
        self.providers: dict[str, Provider] = (
            providers if providers is not None else build_providers(config)
        )
        # The seams where guardrails, rate limits, tracing and the request log attach.
        self.hooks = hooks if hooks is not None else Hooks()
        self._given = (router, ledger, cache)
        self.router: Router
        self.ledger: Ledger
        self.cache: ResponseCache
        self.chat_flow: ChatFlow
        self.embeddings: EmbeddingsFlow
        self.engine = EmbeddingEngine(config)  # local embedding models and their batchers
        # Requests wait their turn at deployments with max_concurrency (`queue:` in config).
        self.admission = Admission(
            max_queue=config.queue.max_queue, starvation_ms=config.queue.starvation_ms
        )
        # The machine's GPUs (NVML, when installed): health and load of local servers.
        self.gpus = GpuPool(
            load_nvml() if config.gpus.enabled else None,
            config.gpus.affinity(),
            max_temperature_c=config.gpus.max_temperature_c,
        )
        self._gpu_watch: asyncio.Task[None] | None = None
        self._retirement = Retirement()  # providers replaced by `reconfigure`, closed later
        # Features that check and follow a reloaded config (templates, the learned router).
        self.followers = Followers()
        self._opened = False

    @classmethod
    def from_config(cls, source: str | Path | Config | None = None) -> Gateway:
        """From a YAML file (None: `$HYBRIDFAST_CONFIG`, `./hybridfast.yaml`, else the
        environment's defaults) or a `Config`."""
        if isinstance(source, Config):
            return cls(source)
        loaded = load_config(None if source is None else str(source))
        return cls(loaded.config, discover=loaded.source == "<defaults>")

    async def open(self) -> Gateway:
        if self._opened:
            return self
        if self._discover:
            await self._add_discovered_servers()
        router, ledger, cache = self._given
        self.router = router if router is not None else build_router(self.config, self.deployments)
        self.ledger = ledger if ledger is not None else await open_ledger(self.config)
        self.cache = cache if cache is not None else await open_cache(self.config)
        self._build_flows()
        if self.gpus.nvml is not None:
            self._gpu_watch = asyncio.ensure_future(self._watch_gpus())
        self._opened = True
        return self

    async def _watch_gpus(self) -> None:
        """Reads the GPUs every `gpus.poll_s` and tells the router: a down GPU's servers are
        left out (failover), a busier GPU's replicas rank lower (balancing)."""
        while True:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.gpus.refresh)
                set_hardware = getattr(self.router, "set_hardware", None)
                if set_hardware is not None:
                    pinned = [(d.id, d.provider) for d in self.deployments]
                    apply_to_router(self.gpus, pinned, set_hardware)
            await asyncio.sleep(self.config.gpus.poll_s)

    async def _add_discovered_servers(self) -> None:
        found = await discover()
        if not found:
            return
        for provider in self.providers.values():  # built for the defaults, never opened
            await provider.close()
        self.config = apply_discovered(self.config, found)
        self.deployments = build_deployments(self.config)
        self.providers = build_providers(self.config)

    def _build_flows(self) -> None:
        queue = self.config.queue
        self.admission.configure({d.id: d.max_concurrency for d in self.deployments})
        self.gpus.affinity = self.config.gpus.affinity()
        parts = Parts(
            self.router,
            self.ledger,
            self.hooks,
            admission=self.admission if queue.enabled else None,
            queue_timeout_s=queue.timeout_s,
            default_priority=queue.default_priority,
        )
        caching = self.config.cache.exact.enabled or self.config.cache.semantic.enabled
        self.chat_flow = ChatFlow(
            parts,
            self.cache,
            self.providers,
            {d.id: d for d in self.deployments},
            ChatSettings(
                caching=caching,
                stream_recovery=self.config.server.stream_recovery,
                coalesce=queue.coalesce,
                coalesce_wait_s=queue.timeout_s,
            ),
        )
        self.embeddings = EmbeddingsFlow(parts, self.config, self.providers, self.engine)

    async def reconfigure(self, config: Config) -> None:
        """Switches an open gateway to `config` without a restart (zero-config re-discovery,
        SIGHUP, `POST /admin/config`). The next request routes over the new deployments;
        requests in flight finish on the flow, router and providers they started with. The
        ledger, hooks and local embedders are kept, the cache too unless `cache.backend` or
        `cache.options` changed, and the config's budgets are applied to the running ledger.
        Providers whose settings did not change keep their connections (plugin providers are
        built again); replaced ones are closed once no call can still be using them. A config
        the router or a follower (`self.followers`: templates, ...) rejects raises
        `ConfigError` and changes nothing. Live routing state (latency averages, circuit
        breakers) starts afresh."""
        if not self._opened:
            raise RuntimeError("reconfigure() needs an open gateway")
        self.followers.check(config)
        redact.configure(redact.config_secrets(config))  # new keys are scrubbed from now on
        configure_prices(config.ledger.prices_file)
        try:
            deployments = build_deployments(config)
            router = build_router(config, deployments)  # the step that can refuse the config
        except Exception:
            configure_prices(self.config.ledger.prices_file)
            raise
        old_cache = None
        if self._given[2] is None and backend_changed(self.config, config):
            # Another cache backend (a plugin selected or dropped): opened before anything
            # changes, so one that cannot open leaves the running config in place.
            try:
                cache = await open_cache(config)
            except Exception:
                configure_prices(self.config.ledger.prices_file)
                await close_router(router)
                raise
            old_cache, self.cache = self.cache, cache
        providers, retired = carry_providers(self.providers, config)
        old_config, old_router = self.config, self.router
        self.config, self.deployments, self.router = config, deployments, router
        self.providers = providers
        self._build_flows()
        self.followers.apply(config)
        self._retirement.retire(retired)
        if old_cache is not None:
            await old_cache.close()
        close = getattr(old_router, "close", None)
        if close is not None:  # stops reporting the old router's metrics
            result = close()
            if inspect.isawaitable(result):
                await result
        await apply_budgets(self.ledger, old_config, config)

    async def close(self) -> None:
        if self._gpu_watch is not None:
            self._gpu_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gpu_watch
        await self.engine.close()  # the embedding batchers, if any request started them
        await self._retirement.close()
        for provider in self.providers.values():
            await provider.close()
        if self._opened:
            await self.cache.close()
            await self.ledger.close()
            close = getattr(self.router, "close", None)
            if close is not None:
                result = close()
                if inspect.isawaitable(result):
                    await result
        self._opened = False

    async def __aenter__(self) -> Gateway:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the pipeline (the server and the CLIs call these) ------------------------------

    async def complete(self, request: ChatRequest, ctx: RequestContext | None = None) -> ChatAnswer:
        """A whole answer; `ctx` ends with the deployment, usage and exact cost."""
        return await self.chat_flow.complete(request, ctx or _context(request))

    def stream_events(
        self, request: ChatRequest, ctx: RequestContext | None = None
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The answer as batches of events (the first once an upstream produced a byte)."""
        return self.chat_flow.events(request, ctx or _context(request))

    async def embed_request(
        self, request: EmbeddingRequest, ctx: RequestContext, **kwargs: Any
    ) -> EmbeddingResult:
        """Embeddings through the same attempt mechanism (`gone=`: whether the client left)."""
        return await self.embeddings.embed(request, ctx, **kwargs)

    def plan(self, request: ChatRequest, caller: Caller = ANONYMOUS) -> RoutePlan:
        """The routing decision for `request`, without calling anything (`route --dry-run`)."""
        ctx = RequestContext(request.model, caller=caller)
        features = RequestFeatures(
            request_id=ctx.request_id,
            input_tokens=input_estimate(request),
            max_output_tokens=request.max_tokens,
            stream=request.stream,
            needs=needs_of(request),
            tags=caller.tags,
            budget_remaining=self.ledger.remaining(caller),
        )
        return self.router.plan(request.model, features, caller)

    # --- the Python API ------------------------------------------------------------------

    def request(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        stream: bool = False,
        **params: Any,
    ) -> ChatRequest:
        """A `ChatRequest` from a prompt or OpenAI-shaped messages and parameters."""
        if isinstance(prompt, ChatRequest):
            return msgspec.structs.replace(prompt, stream=stream, **params)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        try:
            return ChatRequest(
                model=model, messages=check_messages(messages), stream=stream, **params
            )
        except TypeError as exc:
            raise InvalidRequest(f"unknown parameter: {exc}") from None

    async def chat(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        caller: Caller = ANONYMOUS,
        **params: Any,
    ) -> ChatResult:
        """One whole answer through the pipeline."""
        request = self.request(prompt, model=model, **params)
        ctx = RequestContext(request.model, caller=caller)
        return ChatResult(await self.complete(request, ctx), ctx)

    def stream(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        caller: Caller = ANONYMOUS,
        **params: Any,
    ) -> ChatStream:
        """An answer as it arrives: `async for event in gw.stream(...)`."""
        request = self.request(prompt, model=model, stream=True, **params)
        ctx = RequestContext(request.model, caller=caller, stream=True)
        return ChatStream(self.stream_events(request, ctx), ctx)

    async def embed(
        self,
        inputs: str | list[str],
        *,
        model: str,
        caller: Caller = ANONYMOUS,
        dimensions: int | None = None,
    ) -> EmbeddingResult:
        """Embeddings of one text or a list (`.vectors`: one float32 row per input)."""
        request = EmbeddingRequest(
            model=model,
            inputs=[inputs] if isinstance(inputs, str) else list(inputs),
            dimensions=dimensions,
        )
        ctx = RequestContext(model, caller=caller, endpoint="embeddings")
        return await self.embed_request(request, ctx)


def _context(request: ChatRequest) -> RequestContext:
    """A context for a request that came without one (an anonymous caller)."""
    return RequestContext(request.model, stream=request.stream)
