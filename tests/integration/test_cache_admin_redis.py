"""The cache's admin API over HTTP, and the Redis backend's replication between two cache
instances (the real Redis at 127.0.0.1:6379, a unique key prefix per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from hybridfast.cache import open_cache
from hybridfast.cache.redis_backend import RedisCache
from hybridfast.config import Config, parse_config
from hybridfast.errors import ConfigError
from hybridfast.server.app import create_app, gateway_key
from hybridfast.types import Caller, ChatAnswer, ChatRequest

MASTER = "sk-admin-test"
ALICE = Caller(key_name="alice")


def req(text: str, model: str = "m") -> ChatRequest:
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}], temperature=0)


# --- admin API --------------------------------------------------------------------------


async def test_admin_endpoints(aiohttp_client: Any) -> None:
    config = parse_config(
        f"server: {{master_key: {MASTER}}}\n"
        "keys: [{key: sk-user, name: user}]\n"
        "cache: {semantic: {embedder: hashing}}\n"
        "ledger: {backend: memory}\n"  # nothing written in the working directory
    ).config
    client = await aiohttp_client(create_app(config))
    auth = {"authorization": f"Bearer {MASTER}"}
    cache = client.app[gateway_key].cache
    await cache.store(req("q1"), ALICE, ChatAnswer(content="a1"))
    await cache.store(req("q2", model="n"), ALICE, ChatAnswer(content="a2"))

    resp = await client.get("/admin/cache", headers={"authorization": "Bearer sk-user"})
    assert resp.status == 403
    resp = await client.get("/admin/cache", headers=auth)
    assert resp.status == 200
    assert (await resp.json())["exact"]["entries"] == 2

    resp = await client.get("/admin/cache/entries?limit=1", headers=auth)
    entries = (await resp.json())["entries"]
    assert len(entries) == 1
    assert entries[0]["model"] == "n"

    for path, body in [
        ("/admin/cache/invalidate", b"not json"),
        ("/admin/cache/invalidate", b"[1]"),
        ("/admin/cache/invalidate", b'{"bogus": 1}'),
        ("/admin/cache/invalidate", b"{}"),
        ("/admin/cache/invalidate", b'{"key": "xyz"}'),
        ("/admin/cache/invalidate", b'{"model": 5}'),
    ]:
        resp = await client.post(path, data=body, headers=auth)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == "ERR_INVALID_REQUEST"
    resp = await client.get("/admin/cache/entries?limit=0", headers=auth)
    assert resp.status == 400
    assert len(cache.exact) == 2  # bad input changed nothing

    resp = await client.delete(f"/admin/cache/entries/{entries[0]['key']}", headers=auth)
    assert (await resp.json())["invalidated"] == 2  # exact + semantic twin
    resp = await client.post("/admin/cache/invalidate", json={"key_name": "alice"}, headers=auth)
    assert (await resp.json())["invalidated"] == 2
    resp = await client.delete("/admin/cache", headers=auth)
    assert (await resp.json())["invalidated"] == 0


# --- Redis backend ----------------------------------------------------------------------


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"hybridfast-test:{uuid.uuid4().hex}"
    yield name
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    async for key in r.scan_iter(match=f"{name}:*"):
        await r.delete(key)
    await r.aclose()


def redis_config(prefix: str, extra: str = "") -> Config:
    return parse_config(
        f"cache: {{backend: redis, redis_prefix: '{prefix}', "
        f"semantic: {{embedder: hashing, threshold: 0.8{extra}}}}}"
    ).config


async def eventually(predicate: Any) -> None:
    async with asyncio.timeout(5.0):
        while not await predicate():  # noqa: ASYNC110 - another instance, no event to wait on
            await asyncio.sleep(0.02)


@pytest.mark.redis
async def test_two_instances_share_exact_and_semantic_entries(prefix: str) -> None:
    a = await open_cache(redis_config(prefix))
    b = await open_cache(redis_config(prefix))
    assert isinstance(a, RedisCache)
    try:
        await a.store(req("How do I reverse a list in Python?"), ALICE, ChatAnswer(content="r"))
        hit = await b.lookup(req("How do I reverse a list in Python?"), ALICE)
        assert hit is not None
        assert hit.kind == "hit"

        async def b_semantic() -> bool:
            h = await b.lookup(req("how do i reverse a list in python"), ALICE)
            return h is not None and h.kind == "semantic-hit"

        await eventually(b_semantic)
        assert (
            await b.lookup(req("How do I reverse a list in Python?"), Caller(key_name="x")) is None
        )

        # A late starter replays the stream.
        c = await open_cache(redis_config(prefix))
        h = await c.lookup(req("how do i reverse a list in python"), ALICE)
        assert h is not None
        assert h.kind == "semantic-hit"

        # Invalidation by model travels to every instance.
        assert await c.invalidate(model="m") >= 2

        async def gone() -> bool:
            return (
                await a.lookup(req("how do i reverse a list in python"), ALICE) is None
                and await b.lookup(req("how do i reverse a list in python"), ALICE) is None
            )

        await eventually(gone)
        assert await b.lookup(req("How do I reverse a list in Python?"), ALICE) is None
        await c.close()
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_replay_skips_expired_and_malformed_events(prefix: str) -> None:
    a = await open_cache(redis_config(prefix, ", ttl_s: 0.2"))
    await a.store(req("short lived entry"), ALICE, ChatAnswer(content="x"))
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    await r.xadd(f"{prefix}:events", {"e": b"\xffgarbage"})
    await r.aclose()
    await a.close()
    await asyncio.sleep(0.3)
    b = await open_cache(redis_config(prefix, ", ttl_s: 0.2"))
    assert b.semantic is not None
    assert len(b.semantic) == 0
    await b.close()


async def test_unreachable_redis_is_a_config_error() -> None:
    config = parse_config("cache: {backend: redis, redis_url: 'redis://127.0.0.1:1/0'}").config
    with pytest.raises(ConfigError, match="cannot reach Redis"):
        await open_cache(config)


@pytest.mark.redis
async def test_redis_going_away_is_a_miss_not_an_error(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = await open_cache(redis_config(prefix))
    await cache.store(req("kept"), ALICE, ChatAnswer(content="x"))
    assert isinstance(cache, RedisCache)
    await cache.redis.aclose()
    broken = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    cache.redis = broken
    await cache.store(req("not kept"), ALICE, ChatAnswer(content="y"))
    # The exact half is unreachable; the local semantic mirror still answers.
    hit = await cache.lookup(req("kept"), ALICE)
    assert hit is not None
    assert hit.kind == "semantic-hit"
    assert await cache.lookup(req("never stored"), ALICE) is None
    assert "answering without the cache" in caplog.text
    await cache.close()
