"""Zero-config discovery: the model servers that answer on this machine (or the ones the
environment names), turned into providers and models when `serve` runs without a config file.

What is probed, all at once, each with a short timeout (start-up waits at most
`PROBE_TIMEOUT_S` in total):

- Ollama: `GET /api/tags` at `$OLLAMA_HOST`, else `http://127.0.0.1:11434`;
- OpenAI-compatible servers the environment names: `$OPENAI_BASE_URL` (or the older
  `$OPENAI_API_BASE`) when it points at this machine or a private network, and each URL of
  `$HYBRIDFAST_DISCOVER_URLS` (comma-separated): `GET <base_url>/models`;
- the usual local ports of LM Studio (1234), vLLM (8000) and llama.cpp's server (8080),
  `GET http://127.0.0.1:<port>/v1/models` (`$HYBRIDFAST_DISCOVER_PORTS` replaces the list).

Every server found is a provider marked `local: true` (so `offline` and `local-first`
routing use it), each model it lists becomes a model of the same name, and the `auto` route
is rebuilt over every chat model, cloud and local. Another hybridfast gateway answering on one
of the ports is recognised and skipped. `$HYBRIDFAST_DISCOVER=off` turns probing off.

`Rediscovery` repeats the probes in the background (every `$HYBRIDFAST_DISCOVER_INTERVAL_S`,
10 s by default) and reports a changed set of servers, so a local server started after the
gateway is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from hybridfast.config import (
    Config,
    ModelConfig,
    ProviderConfig,
    RouteConfig,
    is_local_url,
    ollama_base_url,
)

log = logging.getLogger("hybridfast.discovery")

# Start-up waits at most this long for all probes together (they run concurrently).
PROBE_TIMEOUT_S = 0.8
DEFAULT_INTERVAL_S = 10.0
# A server must miss this many probes in a row before its models are taken away, so one
# slow answer (a server busy loading weights) does not empty `auto`.
MISSES_TO_FORGET = 2
# Local OpenAI-compatible servers on their default ports, and the provider names they get.
COMMON_PORTS: dict[int, str] = {1234: "lmstudio", 8000: "vllm", 8080: "llamacpp"}
# Name fragments of models that embed rather than chat (neither Ollama's tags nor
# `/v1/models` say which is which).
_EMBEDDING_HINTS = ("embed", "bge-", "e5-", "minilm", "gte-", "nomic-bert")
_OPENAI_CLOUD_HOSTS = ("api.openai.com",)
_OWN_OWNER = "hybridfast"

Kind = Literal["ollama", "openai-compatible"]


@dataclass(frozen=True, slots=True)
class FoundServer:
    """A model server that answered a probe."""

    provider: str
    kind: Kind
    base_url: str
    chat_models: tuple[str, ...]
    embedding_models: tuple[str, ...] = ()
    api_key: str | None = None
    # What led to it, for the start-up line: "OLLAMA_HOST", "port 1234", ...
    source: str = ""

    @property
    def label(self) -> str:
        count = len(self.chat_models) + len(self.embedding_models)
        return f"{self.provider} at {self.base_url} ({count} model{'s' * (count != 1)})"


@dataclass(frozen=True, slots=True)
class _Probe:
    provider: str
    kind: Kind
    base_url: str
    api_key: str | None
    source: str


def enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("HYBRIDFAST_DISCOVER", "on").strip().lower() not in ("off", "0", "false", "no")


def interval_s(env: Mapping[str, str] | None = None) -> float:
    """Seconds between background probes (0: no background probing)."""
    env = os.environ if env is None else env
    raw = env.get("HYBRIDFAST_DISCOVER_INTERVAL_S", "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        log.warning("HYBRIDFAST_DISCOVER_INTERVAL_S=%r is not a number; using 10", raw)
        return DEFAULT_INTERVAL_S


def _probes(env: Mapping[str, str], skip: Collection[int]) -> list[_Probe]:
    probes = [_Probe("ollama", "ollama", ollama_base_url(env), None, "OLLAMA_HOST")]
    named: list[tuple[str, str]] = []
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        url = env.get(var, "").strip()
        if url and is_local_url(url) and urlsplit(url).hostname not in _OPENAI_CLOUD_HOSTS:
            named.append((url, var))
    extra = env.get("HYBRIDFAST_DISCOVER_URLS", "")
    named += [(u.strip(), "HYBRIDFAST_DISCOVER_URLS") for u in extra.split(",") if u.strip()]
    seen: set[str] = set()
    for url, var in named:
        base = _normalise(url)
        if base in seen:
            continue
        seen.add(base)
        name = "openai-local" if len(seen) == 1 else f"openai-local-{len(seen)}"
        probes.append(_Probe(name, "openai-compatible", base, env.get("OPENAI_API_KEY"), var))
    for port, name in _ports(env).items():
        base = f"http://127.0.0.1:{port}/v1"
        if port in skip or base in seen:
            continue
        probes.append(_Probe(name, "openai-compatible", base, None, f"port {port}"))
    return probes


def _ports(env: Mapping[str, str]) -> dict[int, str]:
    raw = env.get("HYBRIDFAST_DISCOVER_PORTS")
    if raw is None:
        return dict(COMMON_PORTS)
    ports: dict[int, str] = {}
    for part in raw.split(","):
        part = part.strip()
        if part.isdigit() and 0 < int(part) < 65536:
            ports[int(part)] = COMMON_PORTS.get(int(part), f"local-{part}")
    return ports


def _normalise(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def is_embedding_model(name: str, family: str = "") -> bool:
    lowered = f"{name} {family}".lower()
    return any(hint in lowered for hint in _EMBEDDING_HINTS) or family.lower().endswith("bert")


async def _get_json(session: aiohttp.ClientSession, url: str, api_key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        if resp.status != 200:
            return None
        return await resp.json(content_type=None)


async def _probe(session: aiohttp.ClientSession, probe: _Probe) -> FoundServer | None:
    """What `probe` finds, or None when nothing (or nothing usable) answers."""
    chat: list[str] = []
    embedding: list[str] = []
    if probe.kind == "ollama":
        body = await _get_json(session, probe.base_url + "/api/tags", probe.api_key)
        entries = body.get("models") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            details = entry.get("details")
            family = details.get("family", "") if isinstance(details, dict) else ""
            target = embedding if is_embedding_model(entry["name"], str(family)) else chat
            target.append(entry["name"])
    else:
        body = await _get_json(session, probe.base_url + "/models", probe.api_key)
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                continue
            if entry.get("owned_by") == _OWN_OWNER:
                return None  # another hybridfast gateway: routing to it would loop
            target = embedding if is_embedding_model(entry["id"]) else chat
            target.append(entry["id"])
    return FoundServer(
        probe.provider,
        probe.kind,
        probe.base_url,
        tuple(sorted(set(chat))),
        tuple(sorted(set(embedding))),
        probe.api_key,
        probe.source,
    )


async def discover(
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    skip_ports: Collection[int] = (),
) -> list[FoundServer]:
    """Probes every candidate at once; returns the servers that answered, in probe order.
    `skip_ports`: local ports not to probe (the gateway's own)."""
    env = os.environ if env is None else env
    if not enabled(env):
        return []
    probes = _probes(env, skip_ports)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:

        async def attempt(probe: _Probe) -> FoundServer | None:
            try:
                return await _probe(session, probe)
            except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                log.debug("discovery: nothing usable at %s (%s)", probe.base_url, exc)
                return None

        results = await asyncio.gather(*(attempt(p) for p in probes))
    return [r for r in results if r is not None]


def discover_blocking(
    env: Mapping[str, str] | None = None, *, skip_ports: Collection[int] = ()
) -> list[FoundServer]:
    """`discover` for code that runs before any event loop (the `serve` command)."""
    return asyncio.run(discover(env, skip_ports=skip_ports))


# --- from what was found to a config -------------------------------------------------------


def chat_model_names(config: Config) -> list[str]:
    """The names a chat request can use: models that are not embedding-only, and routes."""
    names = {m.name for m in config.models if "embeddings" not in m.capabilities}
    return sorted(names)


def apply(config: Config, found: Sequence[FoundServer]) -> Config:
    """`config` (the environment's defaults) with the found servers added as local providers
    and their models, and `auto` rebuilt over every chat model. `config` is not changed."""
    found_urls = {f.base_url.rstrip("/") for f in found}
    # A key-based provider whose base URL turned out to be a local server would offer the
    # cloud's model names there; the server's own list replaces it.
    replaced = {
        p.name
        for p in config.providers
        if p.base_url and p.base_url.rstrip("/") in found_urls and p.kind != "ollama"
    }
    found_names = {f.provider for f in found}
    providers = [p for p in config.providers if p.name not in replaced | found_names]
    models = [m for m in config.models if m.provider not in replaced | found_names]
    routes = {name: r for name, r in config.routes.items() if name != "auto"}
    for server in found:
        providers.append(
            ProviderConfig(
                name=server.provider,
                kind=server.kind,
                base_url=server.base_url,
                api_key=server.api_key,
                local=True,
            )
        )
        models += [
            ModelConfig(name=n, provider=server.provider, model=n) for n in server.chat_models
        ]
        models += [
            ModelConfig(name=n, provider=server.provider, model=n, capabilities=["embeddings"])
            for n in server.embedding_models
        ]
        for name in server.chat_models:
            # Ollama's `llama3.2:latest` is what people call `llama3.2`.
            short = name.removesuffix(":latest")
            if short != name and short not in routes:
                routes[short] = RouteConfig(candidates=[name])
    updated = msgspec.structs.replace(config, providers=providers, models=models, routes=routes)
    taken = updated.model_names()
    updated.routes = {k: r for k, r in routes.items() if k not in taken}
    chat = chat_model_names(updated)
    if chat and "auto" not in taken:
        updated.routes["auto"] = RouteConfig(strategy="balanced", candidates=chat)
    return updated


def startup_line(config: Config, found: Sequence[FoundServer], *, probed: bool) -> str:
    """The one line `serve` logs about what it can answer."""
    chat = chat_model_names(config)
    where = "; ".join(f.label for f in found) if found else "no local model server answered"
    if not chat:
        return (
            "no chat model: chat requests answer 503 ERR_NO_CHAT_MODELS until one exists — "
            "start Ollama (or set OLLAMA_HOST), set OPENAI_API_KEY or ANTHROPIC_API_KEY, "
            "or pass --config (embeddings work: the built-in models need no provider)"
            + (f" [discovery: {where}]" if probed else "")
        )
    shown = ", ".join(chat[:8]) + (f" and {len(chat) - 8} more" if len(chat) > 8 else "")
    auto = " (auto routes over them)" if "auto" in config.routes else ""
    prefix = f"discovery: {where}; " if probed else ""
    return f"{prefix}chat models: {shown}{auto}"


# --- in the background -----------------------------------------------------------------------

OnChange = Callable[[Config, list[FoundServer]], Awaitable[None]]


class Rediscovery:
    """Repeats the probes every `interval_s` and calls `on_change(config, found)` with the
    defaults re-applied when the set of servers or their models changed. A server is dropped
    only after `MISSES_TO_FORGET` probes in a row missed it. A change `on_change` fails to
    apply is tried again on the next round."""

    def __init__(
        self,
        base: Config,
        found: Sequence[FoundServer],
        on_change: OnChange | None = None,
        *,
        env: Mapping[str, str] | None = None,
        interval: float | None = None,
        skip_ports: Collection[int] = (),
    ) -> None:
        self._base = base
        self._env = dict(os.environ if env is None else env)
        self._interval = interval_s(self._env) if interval is None else interval
        self._skip = tuple(skip_ports)
        self.on_change = on_change
        self.current: dict[str, FoundServer] = {f.provider: f for f in found}
        self._misses: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None and enabled(self._env):
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. a config the router refuses: keep probing
                log.warning("discovery: could not apply what changed (%s); trying again", exc)

    async def probe_once(self) -> bool:
        """One round of probes; True when it changed what is served."""
        found = {f.provider: f for f in await discover(self._env, skip_ports=self._skip)}
        servers = dict(self.current)
        gone = []
        for name in list(servers):
            if name in found:
                self._misses.pop(name, None)
                continue
            self._misses[name] = self._misses.get(name, 0) + 1
            if self._misses[name] >= MISSES_TO_FORGET:
                gone.append(name)
                del servers[name]
        new = [s for name, s in found.items() if servers.get(name) != s]
        servers.update((s.provider, s) for s in new)
        if not gone and not new:
            return False
        if self.on_change is not None:
            await self.on_change(apply(self._base, list(servers.values())), list(servers.values()))
        # Only once applied: a change that failed is found again next round.
        for name in gone:
            log.info("discovery: %s stopped answering; its models are gone", name)
            self._misses.pop(name, None)
        for server in new:
            log.info("discovery: found %s", server.label)
        self.current = servers
        return True
