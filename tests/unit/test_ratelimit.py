"""Rate limits: the core limiter through its Python glue, in one process and shared by two
backends on the real Redis at 127.0.0.1:6379 (a unique key prefix per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from hybridfast._core import InvalidArgumentError, RateLimiter
from hybridfast.config import Config, parse_config
from hybridfast.errors import ConfigError, RateLimited
from hybridfast.security.ratelimit import (
    REFUSED,
    Limit,
    LocalBackend,
    RateLimits,
    format_reset,
    scopes_for,
)
from hybridfast.security.ratelimit_redis import RedisBackend
from hybridfast.types import Caller, ChatRequest

ALICE = Caller(key_name="alice", user="al", team="red")


def chat(text: str = "hi", max_tokens: int | None = 10, model: str = "m") -> ChatRequest:
    return ChatRequest(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens
    )


def config(rules: str, extra: str = "") -> Config:
    return parse_config(f"limits: {{rules: [{rules}]{extra}}}\n").config


async def admit_all(limits: list[RateLimits], n: int, request: ChatRequest) -> int:
    """Fires n admissions at once, spread over the given instances; how many got in."""

    async def one(i: int) -> bool:
        try:
            await limits[i % len(limits)].admit(ALICE, request)
        except RateLimited:
            return False
        return True

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def test_200_concurrent_requests_admit_exactly_the_limit() -> None:
    limits = RateLimits(config("{scope: key, name: alice, rpm: 50}"), LocalBackend())
    assert await admit_all([limits], 200, chat()) == 50


async def test_refusal_is_a_429_with_retry_after_and_openai_headers() -> None:
    limits = RateLimits(config("{scope: team, name: red, rpm: 2, tpm: 1000}"), LocalBackend())
    _, headers = await limits.admit(ALICE, chat("x" * 40, max_tokens=90))  # 10 + 90 tokens
    assert headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-tokens": "6s",
    }
    await limits.admit(ALICE, chat())
    with pytest.raises(RateLimited) as refused:
        await limits.admit(ALICE, chat())
    err = refused.value
    assert (err.status, err.code) == (429, "ERR_RATE_LIMITED")
    assert 1 <= int(err.headers["Retry-After"]) <= 30
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert "team:red" in err.message
    assert REFUSED.values[("team", "requests")] >= 1  # exported as hybridfast_ratelimit_refused


async def test_tokens_are_settled_with_actual_usage() -> None:
    limits = RateLimits(config("{scope: model, name: m, tpm: 1000}"), LocalBackend())
    hold, _ = await limits.admit(ALICE, chat(max_tokens=600))
    assert hold is not None
    with pytest.raises(RateLimited):
        await limits.admit(ALICE, chat(max_tokens=600))
    await limits.release(hold, actual_tokens=50)
    _, headers = await limits.admit(ALICE, chat(max_tokens=600))
    assert headers["x-ratelimit-remaining-tokens"] == "350"


async def test_a_request_larger_than_the_limit_has_no_retry_after() -> None:
    limits = RateLimits(config("{scope: global, tpm: 100}"), LocalBackend())
    with pytest.raises(RateLimited) as refused:
        await limits.admit(ALICE, chat(max_tokens=500))
    assert "Retry-After" not in refused.value.headers
    assert "more tokens" in refused.value.message


async def test_parallel_slots_come_back_when_requests_end() -> None:
    limits = RateLimits(config("{scope: user, name: al, max_parallel: 2}"), LocalBackend())
    first, _ = await limits.admit(ALICE, chat())
    await limits.admit(ALICE, chat())
    with pytest.raises(RateLimited) as refused:
        await limits.admit(ALICE, chat())
    assert refused.value.headers["Retry-After"] == "1"
    assert first is not None
    await limits.release(first, 0)
    await limits.admit(ALICE, chat())


async def test_unconfigured_scopes_and_runtime_key_limits() -> None:
    limits = RateLimits(config("{scope: key, name: bob, rpm: 1}"), LocalBackend())
    assert await admit_all([limits], 20, chat()) == 20  # alice is not limited
    limits.set_key_limits("alice", Limit(rpm=3))
    assert await admit_all([limits], 20, chat()) == 3
    limits.set_key_limits("alice", None)
    assert await admit_all([limits], 20, chat()) == 20


def test_scopes_name_every_dimension() -> None:
    assert scopes_for(ALICE, "gpt") == [
        "global",
        "model:gpt",
        "route:gpt",
        "key:alice",
        "user:al",
        "team:red",
    ]


def test_reset_uses_openai_duration_format() -> None:
    assert [format_reset(ms) for ms in (0, 20, 999, 1000, 1001, 59_000, 360_000, 3_723_000)] == [
        "0ms",
        "20ms",
        "999ms",
        "1s",
        "2s",
        "59s",
        "6m0s",
        "1h2m3s",
    ]


def test_core_refuses_a_zero_limit() -> None:
    with pytest.raises(InvalidArgumentError):
        RateLimiter().configure("key:a", rpm=0)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("{scope: key, rpm: 5}", "needs the key's name"),
        ("{scope: global, name: x, rpm: 5}", "a global limit has no name"),
        ("{scope: team, name: t}", "at least one of"),
        ("{scope: team, name: t, rpm: 1}, {scope: team, name: t, tpm: 9}", "the same scope"),
        ("{scope: team, name: t, rpm: 0}", r"limits\.rules\[0\]\.rpm: Expected `int` >= 1"),
    ],
)
def test_bad_rules_are_config_errors(rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(rules)


# --- Redis: two instances share the counters ----------------------------------------------


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    import redis.asyncio as aioredis

    name = f"hybridfast-test-rl:{uuid.uuid4().hex}"
    yield name
    r = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    async for key in r.scan_iter(match=f"{name}:*"):
        await r.delete(key)
    await r.aclose()


def redis_limits(rules: str, prefix: str) -> RateLimits:
    cfg = config(rules, f", backend: redis, redis_prefix: '{prefix}'")
    return RateLimits(cfg, RedisBackend(cfg.limits))


async def close(*limits: RateLimits) -> None:
    for lim in limits:
        assert isinstance(lim.backend, RedisBackend)
        await lim.backend.close()


@pytest.mark.redis
async def test_two_instances_on_redis_admit_exactly_the_limit(prefix: str) -> None:
    rules = "{scope: key, name: alice, rpm: 50}"
    a, b = redis_limits(rules, prefix), redis_limits(rules, prefix)
    try:
        assert await admit_all([a, b], 200, chat()) == 50
        with pytest.raises(RateLimited) as refused:
            await b.admit(ALICE, chat())
        assert refused.value.headers["Retry-After"] == "2"  # 60 s / 50 = 1.2 s, rounded up
    finally:
        await close(a, b)


@pytest.mark.redis
async def test_redis_tokens_parallel_and_headers_match_the_core(prefix: str) -> None:
    rules = "{scope: team, name: red, rpm: 2, tpm: 1000, max_parallel: 1}"
    a, b = redis_limits(rules, prefix), redis_limits(rules, prefix)
    local = RateLimits(config(rules), LocalBackend())
    try:
        hold, headers = await a.admit(ALICE, chat("x" * 40, max_tokens=90))
        _, local_headers = await local.admit(ALICE, chat("x" * 40, max_tokens=90))
        assert headers == local_headers
        with pytest.raises(RateLimited) as refused:  # the one parallel slot is a's
            await b.admit(ALICE, chat())
        assert refused.value.headers["Retry-After"] == "1"
        assert hold is not None
        await a.release(hold, actual_tokens=900)  # settled up: 900 of 1000 used
        with pytest.raises(RateLimited, match="tokens per minute"):
            await b.admit(ALICE, chat(max_tokens=200))
        with pytest.raises(RateLimited, match="more tokens"):
            await b.admit(ALICE, chat(max_tokens=5000))
        await b.admit(ALICE, chat(max_tokens=50))
    finally:
        await close(a, b)
