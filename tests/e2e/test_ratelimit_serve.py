"""Rate limits end to end: 200 concurrent requests from the official `openai` SDK against
real `python -m hybridfast serve` processes — one instance, then two sharing Redis — and
exactly the limit gets through; the rest get OpenAI-shaped 429s with Retry-After."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.server import RunningServer, start_server

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-test-master"
ALICE = "sk-hybridfast-test-alice"
LIMIT = 50


def refilled(since: float) -> int:
    """Requests the bucket has taken back since `since` (perf_counter): it leaks one every
    60 / LIMIT s, so a burst that outlasts that on a busy machine is admitted one more."""
    return math.floor((time.perf_counter() - since) * LIMIT / 60)


def config_text(fake: FakeUpstream, limits: str) -> str:
    return fake_config(
        fake,
        server=f"  master_key: {MASTER}",
        extra=(
            f"keys: [{{key: {ALICE}, name: alice, team: red}}]\n"
            "cache: {exact: {enabled: false}, semantic: {enabled: false}}\n"
            f"limits: {{{limits}rules: [{{scope: key, name: alice, rpm: {LIMIT}}}]}}\n"
        ),
    )


async def fire(urls: list[str], n: int) -> tuple[int, list[openai.RateLimitError]]:
    clients = [
        openai.AsyncOpenAI(base_url=url + "/v1", api_key=ALICE, max_retries=0) for url in urls
    ]

    async def one(i: int) -> openai.RateLimitError | None:
        try:
            await clients[i % len(clients)].chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=8
            )
        except openai.RateLimitError as exc:
            return exc
        return None

    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for c in clients:
            await c.close()
    refused = [o for o in outcomes if o is not None]
    return n - len(refused), refused


def check_refusal(err: openai.RateLimitError) -> None:
    assert err.status_code == 429
    body = err.body
    assert isinstance(body, dict)
    assert body["code"] == "ERR_RATE_LIMITED"
    headers = err.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == str(LIMIT)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


@pytest.fixture
def single(fake_openai: FakeUpstream) -> Iterator[RunningServer]:
    with start_server(config_text(fake_openai, "")) as running:
        yield running


async def test_one_instance_admits_exactly_the_limit(single: RunningServer) -> None:
    # A stream carries the counters in its headers too (and counts against the limit).
    started = time.perf_counter()
    alice = openai.AsyncOpenAI(base_url=single.url + "/v1", api_key=ALICE, max_retries=0)
    async with alice.chat.completions.with_streaming_response.create(
        model="chat", messages=[{"role": "user", "content": "stream"}], max_tokens=8, stream=True
    ) as streamed:
        assert streamed.headers["x-ratelimit-remaining-requests"] == str(LIMIT - 1)
        async for _ in streamed.iter_lines():
            pass
    await alice.close()
    admitted, refused = await fire([single.url], 200)
    assert LIMIT - 1 <= admitted <= LIMIT - 1 + refilled(started)
    check_refusal(refused[0])
    # An admitted answer carries the counters too.
    client = openai.AsyncOpenAI(base_url=single.url + "/v1", api_key=MASTER, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "master"}], max_tokens=8
    )
    await client.close()
    assert "x-ratelimit-limit-requests" not in raw.headers  # the master key is not limited
    assert ALICE not in single.log()


@pytest.mark.redis
def test_two_instances_sharing_redis_admit_exactly_the_limit(fake_openai: FakeUpstream) -> None:
    prefix = f"hybridfast-test-rl:{uuid.uuid4().hex}"
    text = config_text(fake_openai, f"backend: redis, redis_prefix: '{prefix}', ")
    with start_server(text) as a, start_server(text) as b:
        started = time.perf_counter()
        admitted, refused = asyncio.run(fire([a.url, b.url], 200))
    assert LIMIT <= admitted <= LIMIT + refilled(started)
    assert len(refused) == 200 - admitted
    check_refusal(refused[-1])
