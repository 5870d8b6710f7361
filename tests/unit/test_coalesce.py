"""Single-flight bookkeeping: one leader per key, followers wake when it finishes."""

from __future__ import annotations

import asyncio

from hybridfast.pipeline.coalesce import InFlight


async def test_one_leader_per_key_and_followers_wake_when_it_finishes() -> None:
    flight = InFlight()
    leader = flight.lead(b"k")
    assert leader is not None
    assert flight.lead(b"k") is None  # someone leads already
    assert flight.lead(b"other") is not None
    waiters = [asyncio.create_task(flight.wait(b"k", 5)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flight.finish(b"k", leader)
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flight.lead(b"k") is not None  # the next identical request leads anew


async def test_no_leader_means_no_wait_and_a_slow_leader_times_out() -> None:
    flight = InFlight()
    assert await flight.wait(b"k", 5) is False
    flight.lead(b"k")
    assert await flight.wait(b"k", 0.01) is False  # the caller goes upstream itself


async def test_a_stale_finish_does_not_remove_a_newer_leader() -> None:
    flight = InFlight()
    first = flight.lead(b"k")
    assert first is not None
    flight.finish(b"k", first)
    second = flight.lead(b"k")
    assert second is not None
    flight.finish(b"k", first)  # late duplicate finish of the old leader
    assert flight.lead(b"k") is None  # the newer leader still leads
