"""A feature with nothing to do costs a request nothing. At the default config no hook is
attached where every request would await it (rate limits, runtime keys' model lists, plugin
callbacks, tracing, the queue-time mark); each attaches once its feature has work (a key
with a model list or a limit created at run time) and detaches when it has none again. A
sampled request passes the cache without a lookup, and is still counted as a bypass."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from hybridfast.cache import MemoryCache
from hybridfast.cache.metrics import LOOKUPS
from hybridfast.config import PluginsConfig, parse_config
from hybridfast.observability.observer import record_for
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.security.keys import KeyRecord
from hybridfast.security.keys_service import service_of
from hybridfast.security.ratelimit import Limit
from hybridfast.security.ratelimit_hooks import limits_of
from hybridfast.server.app import create_app
from hybridfast.types import ChatRequest
from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.unit.test_plugins import GOOD, _install_dist

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Say something short."}]}


async def _started(aiohttp_client: Any, fake: FakeUpstream) -> tuple[Any, Gateway]:
    config = parse_config(fake_config(fake)).config
    gateway = Gateway(config)
    client = await aiohttp_client(create_app(config, gateway=gateway))
    return client, gateway


async def test_idle_features_attach_no_hooks_and_wake_when_needed(
    aiohttp_client: Any, fake_openai: FakeUpstream
) -> None:
    client, gateway = await _started(aiohttp_client, fake_openai)
    hooks = gateway.hooks
    assert hooks.names("before_route") == []
    assert hooks.names("attempt_start") == []
    assert hooks.names("attempt_end") == []
    assert not {"ratelimit", "plugins", "tracing"} & set(hooks.names("after_answer"))

    # The queue time no longer comes from a hook: the record still has it.
    seen: list[RequestContext] = []

    async def keep(ctx: RequestContext, _r: PipelineRequest, _a: PipelineAnswer | None) -> None:
        seen.append(ctx)

    hooks.add("after_answer", keep, name="test-keep")
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    record = record_for(seen[0], status=200, code=None)
    assert record.queue_ms is not None
    assert 0 <= record.queue_ms <= record.latency_ms

    # A runtime key with a model list turns the allow-list check on; its revocation, off.
    keys = service_of(gateway)
    listed = KeyRecord(name="listed", models=["other"], created_at=time.time(), created_by="t")
    await keys.apply(listed)
    assert hooks.names("before_route") == ["key-models"]
    keys.forget("listed")
    assert hooks.names("before_route") == []
    await keys.apply(KeyRecord(name="any-model", created_at=time.time(), created_by="t"))
    assert hooks.names("before_route") == []

    # A key's rate limit turns rate limiting on; with the last limit gone admission is off,
    # and the release stays attached for holds admitted before.
    limits = limits_of(gateway)
    assert limits is not None
    limits.set_key_limits("limited", Limit(rpm=100))
    assert hooks.names("before_route") == ["ratelimit"]
    assert "ratelimit" in hooks.names("after_answer")
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    limits.set_key_limits("limited", None)
    assert hooks.names("before_route") == []
    assert "ratelimit" in hooks.names("after_answer")


async def test_a_sampled_request_passes_the_cache_without_a_lookup(
    aiohttp_client: Any, fake_openai: FakeUpstream, monkeypatch: Any
) -> None:
    client, gateway = await _started(aiohttp_client, fake_openai)
    looked_up: list[Any] = []
    real_lookup = MemoryCache.lookup

    async def lookup(self: MemoryCache, request: Any, caller: Any, ticket: Any = None) -> Any:
        looked_up.append(request)
        return await real_lookup(self, request, caller, ticket)

    monkeypatch.setattr(MemoryCache, "lookup", lookup)
    cache = gateway.cache
    assert isinstance(cache, MemoryCache)
    before = dict(cache.counts)
    bypassed = LOOKUPS.values.get(("bypass",), 0)

    resp = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.7})
    assert resp.status == 200
    assert resp.headers["x-hybridfast-cache"] == "bypass"
    assert looked_up == []
    assert cache.counts["bypass"] == before["bypass"] + 1
    assert LOOKUPS.values[("bypass",)] == bypassed + 1

    # A deterministic request is still looked up (a miss, then kept).
    resp = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0})
    assert resp.status == 200
    assert resp.headers["x-hybridfast-cache"] == "miss"
    assert len(looked_up) == 1
    assert cache.counts["miss"] == before["miss"] + 1


async def test_plugin_callbacks_attach_when_a_reload_loads_one(
    aiohttp_client: Any, fake_openai: FakeUpstream, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    client, gateway = await _started(aiohttp_client, fake_openai)
    assert "plugins" not in gateway.hooks.names("after_answer")
    _install_dist(tmp_path, "hf_idle_good", GOOD)
    sink = tmp_path / "events.jsonl"
    plugins = PluginsConfig(
        callbacks=["hf_idle_good"], options={"hf_idle_good": {"path": str(sink)}}
    )
    await gateway.reconfigure(msgspec.structs.replace(gateway.config, plugins=plugins))
    assert "plugins" in gateway.hooks.names("after_answer")
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert [line[0] for line in map(json.loads, sink.read_text().splitlines())] == [
        resp.headers["x-hybridfast-request-id"]
    ]
    # Named no more: detached again.
    await gateway.reconfigure(
        msgspec.structs.replace(gateway.config, plugins=PluginsConfig(callbacks=["absent"]))
    )
    assert "plugins" not in gateway.hooks.names("after_answer")


class _CacheWithoutBypassCount:
    """A cache of the Python API's own (the protocol without the optional `note_bypass`)."""

    def __init__(self) -> None:
        self.lookups = 0

    def ticket(self, request: Any, caller: Any) -> Any:
        return SimpleNamespace(lookup=False, store=False)

    async def lookup(self, request: Any, caller: Any, ticket: Any = None) -> None:
        self.lookups += 1

    async def store(self, request: Any, caller: Any, answer: Any, ticket: Any = None) -> None:
        raise AssertionError("a bypassed answer is not kept")

    def bypass(self, request: Any) -> bool:
        return True

    async def close(self) -> None:
        pass


async def test_a_cache_without_the_bypass_count_is_still_asked(fake_openai: FakeUpstream) -> None:
    config = parse_config(fake_config(fake_openai)).config
    cache = _CacheWithoutBypassCount()
    async with Gateway(config, cache=cache) as gateway:
        ctx = RequestContext("chat")
        answer = await gateway.complete(ChatRequest(model="chat", messages=CHAT["messages"]), ctx)
    assert answer.content
    assert (ctx.cache, cache.lookups) == ("bypass", 1)
