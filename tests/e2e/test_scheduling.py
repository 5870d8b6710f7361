"""Scheduling through a real serve: with a slow upstream and max_concurrency 1, requests queue
instead of failing; interactive requests overtake queued batch ones; two keys share the
deployment evenly; a client that disconnects leaves the queue; a full queue is a 429; and
identical concurrent requests make one upstream call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow


def one_slot(fake: FakeUpstream, extra: str = "") -> str:
    text = fake_config(fake).replace(
        "    price: {input_per_mtok: 1, output_per_mtok: 2}\n",
        "    price: {input_per_mtok: 1, output_per_mtok: 2}\n    max_concurrency: 1\n",
    )
    return text + extra


async def chat(
    session: aiohttp.ClientSession,
    url: str,
    content: str,
    *,
    priority: str | None = None,
    key: str | None = None,
    temperature: float | None = None,
) -> tuple[int, dict[str, str]]:
    headers = {}
    if priority:
        headers["x-hybridfast-priority"] = priority
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body: dict[str, object] = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    if temperature is not None:
        body["temperature"] = temperature
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_interactive_overtakes_queued_batch(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    fake_openai.switches.first_byte_s = 0.3
    server = serve_gateway(one_slot(fake_openai))
    finished: list[str] = []

    async def one(session: aiohttp.ClientSession, name: str, priority: str) -> None:
        status, _ = await chat(session, server.url, name, priority=priority)
        assert status == 200
        finished.append(name)

    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(one(session, "running", "batch"))
        await asyncio.sleep(0.1)
        batch = [asyncio.create_task(one(session, f"batch{i}", "batch")) for i in range(3)]
        await asyncio.sleep(0.1)
        urgent = asyncio.create_task(one(session, "urgent", "interactive"))
        await asyncio.gather(first, *batch, urgent)
    assert finished[0] == "running"
    assert finished[1] == "urgent"  # it arrived last and went first
    assert fake_openai.calls == 5


async def test_two_keys_share_a_busy_deployment_evenly(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    fake_openai.switches.first_byte_s = 0.02
    keys = (
        "keys:\n"
        "  - {name: alice, key: key-alice-0123456789, team: a}\n"
        "  - {name: bob, key: key-bob-0123456789, team: b}\n"
    )
    server = serve_gateway(one_slot(fake_openai, keys))
    served: list[str] = []

    async def client(session: aiohttp.ClientSession, name: str, n: int) -> None:
        async def one(i: int) -> None:
            status, _ = await chat(session, server.url, f"{name}{i}", key=f"key-{name}-0123456789")
            assert status == 200
            served.append(name)

        await asyncio.gather(*(one(i) for i in range(n)))

    async with aiohttp.ClientSession() as session:
        # Alice floods the queue first; Bob arrives a moment later with as many.
        alice = asyncio.create_task(client(session, "alice", 30))
        await asyncio.sleep(0.05)
        bob = asyncio.create_task(client(session, "bob", 30))
        await asyncio.gather(alice, bob)
    # While both had requests waiting, they took turns: within 10% of even.
    window = served[5:45]
    assert abs(window.count("alice") - window.count("bob")) <= 4, served


async def test_a_disconnected_waiter_leaves_the_queue_and_a_full_queue_is_429(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    fake_openai.switches.first_byte_s = 0.5
    server = serve_gateway(one_slot(fake_openai, "queue: {max_queue: 2}\n"))
    async with aiohttp.ClientSession() as session:
        running = asyncio.create_task(chat(session, server.url, "running"))
        await asyncio.sleep(0.1)
        quitter = asyncio.create_task(chat(session, server.url, "quitter"))
        waiter = asyncio.create_task(chat(session, server.url, "waiter"))
        await asyncio.sleep(0.1)
        status, headers = await chat(session, server.url, "one too many")
        assert status == 429
        assert headers.get("Retry-After")
        quitter.cancel()  # its client goes away while it waits
        await asyncio.sleep(0.1)
        assert (await running)[0] == 200
        assert (await waiter)[0] == 200
    assert fake_openai.calls == 2  # the one that left never reached the upstream


async def test_identical_concurrent_requests_make_one_upstream_call(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    fake_openai.switches.first_byte_s = 0.3
    server = serve_gateway(fake_config(fake_openai))
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(chat(session, server.url, "the same question", temperature=0) for _ in range(5))
        )
    assert [status for status, _ in results] == [200] * 5
    assert fake_openai.calls == 1
    caches = sorted(headers["x-hybridfast-cache"] for _, headers in results)
    assert caches == ["hit", "hit", "hit", "hit", "miss"]
