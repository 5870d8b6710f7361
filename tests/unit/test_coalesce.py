"""Single-flight: identical in-flight requests share one upstream call; failures are not shared."""

from __future__ import annotations

import asyncio

import pytest

from hybridfast.pipeline.coalesce import SingleFlight


async def test_identical_concurrent_calls_make_one_call() -> None:
    flight: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    tasks = [asyncio.create_task(flight.run(b"k", upstream)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [r for r, _ in results] == ["answer"] * 10
    assert sum(led for _, led in results) == 1
    assert len(flight) == 0


async def test_different_keys_do_not_share() -> None:
    flight: SingleFlight[bytes] = SingleFlight()

    async def echo(k: bytes) -> bytes:
        await asyncio.sleep(0)
        return k

    results = await asyncio.gather(*(flight.run(k, lambda k=k: echo(k)) for k in (b"a", b"b")))
    assert [r for r, _ in results] == [b"a", b"b"]


async def test_a_failed_leader_lets_followers_call_on_their_own() -> None:
    flight: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def upstream() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            raise RuntimeError("the leader's own failure")
        await asyncio.sleep(0.01)  # in flight long enough for the others to join
        return "answer"

    leader = asyncio.create_task(flight.run(b"k", upstream))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(flight.run(b"k", upstream)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(RuntimeError):
        await leader
    results = await asyncio.gather(*followers)
    assert [r for r, _ in results] == ["answer"] * 3
    assert calls == 2  # one follower led the retry, the others shared it


async def test_a_cancelled_leader_does_not_cancel_followers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    started = asyncio.Event()

    async def upstream() -> str:
        started.set()
        await asyncio.sleep(0.01)
        return "answer"

    leader = asyncio.create_task(flight.run(b"k", upstream))
    await started.wait()
    follower = asyncio.create_task(flight.run(b"k", upstream))
    await asyncio.sleep(0)
    leader.cancel()  # the leader's client went away
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await follower == ("answer", True)


async def test_a_cancelled_follower_does_not_cancel_the_leader() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def upstream() -> str:
        await release.wait()
        return "answer"

    leader = asyncio.create_task(flight.run(b"k", upstream))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flight.run(b"k", upstream))
    await asyncio.sleep(0)
    follower.cancel()
    release.set()
    assert await leader == ("answer", True)
