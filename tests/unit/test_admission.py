"""Admission in front of a concurrency limit: the asyncio waiting over the core's FairQueue."""

from __future__ import annotations

import asyncio

import pytest

from hybridfast.pipeline.admission import Admission, QueueFull, parse_priority


async def _hold(
    admission: Admission, tenant: str, priority: int, order: list[str], gate: asyncio.Event
) -> None:
    async with admission.slot("d", tenant=tenant, priority=priority, timeout_s=10):
        order.append(tenant)
        await gate.wait()


async def _started(admission: Admission, waiting: int) -> None:
    """Lets the other tasks run until `waiting` of them wait at deployment "d"."""
    for _ in range(1000):
        if admission.load("d")[1] == waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{admission.load('d')[1]} waiting, expected {waiting}")


async def test_no_limit_means_no_queue() -> None:
    admission = Admission()
    async with admission.slot("unknown", tenant="a", priority=0, timeout_s=1) as waited:
        assert waited == 0.0


async def test_interactive_overtakes_queued_batch_and_slots_pass_on() -> None:
    admission = Admission()
    admission.configure({"d": 1})
    order: list[str] = []
    gate = asyncio.Event()
    first = asyncio.create_task(_hold(admission, "first", 9, order, gate))
    await asyncio.sleep(0)
    batch = [asyncio.create_task(_hold(admission, f"batch{i}", 9, order, gate)) for i in range(3)]
    await _started(admission, 3)
    urgent = asyncio.create_task(_hold(admission, "urgent", 0, order, gate))
    await _started(admission, 4)
    gate.set()
    await asyncio.gather(first, *batch, urgent)
    assert order == ["first", "urgent", "batch0", "batch1", "batch2"]
    assert admission.load("d") == (0, 0)


async def test_two_tenants_share_a_deployment_evenly() -> None:
    admission = Admission()
    admission.configure({"d": 1})
    served: list[str] = []

    async def one(tenant: str) -> None:
        async with admission.slot("d", tenant=tenant, priority=0, timeout_s=30):
            served.append(tenant)
            await asyncio.sleep(0)

    # Tenant a floods the queue first; b arrives after. Both are served in turn.
    tasks = [asyncio.create_task(one("a")) for _ in range(40)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one("b")) for _ in range(40)]
    await asyncio.gather(*tasks)
    first_half = served[:40]
    assert abs(first_half.count("a") - first_half.count("b")) <= 4  # within 10% of even


async def test_a_disconnected_waiter_leaves_the_queue() -> None:
    admission = Admission()
    admission.configure({"d": 1})
    gate = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_hold(admission, "holder", 0, order, gate))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_hold(admission, "gone", 0, order, gate))
    await _started(admission, 1)
    gone.cancel()  # the client disconnected
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert admission.load("d") == (1, 0)
    gate.set()
    await holder
    assert order == ["holder"]
    assert admission.load("d") == (0, 0)


async def test_full_queue_and_deadline_refuse_with_429() -> None:
    admission = Admission(max_queue=1)
    admission.configure({"d": 1})
    gate = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_hold(admission, "holder", 0, order, gate))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(
        admission.slot("d", tenant="w", priority=0, timeout_s=0.05).__aenter__()
    )
    await _started(admission, 1)
    with pytest.raises(QueueFull) as full:
        async with admission.slot("d", tenant="x", priority=0, timeout_s=1):
            pass
    assert full.value.status == 429
    assert full.value.headers["Retry-After"]
    with pytest.raises(QueueFull):
        await waiter  # its deadline passed
    assert admission.load("d") == (1, 0)
    gate.set()
    await holder
    assert admission.load("d") == (0, 0)


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    admission = Admission()
    admission.configure({"d": 1})
    gate = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_hold(admission, "holder", 0, order, gate))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(_hold(admission, "doomed", 0, order, gate))
    await _started(admission, 1)
    heir = asyncio.create_task(_hold(admission, "heir", 0, order, gate))
    await _started(admission, 2)
    gate.set()
    await asyncio.sleep(0)  # the holder finishes and hands its slot to "doomed"...
    doomed.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(holder, heir, doomed, return_exceptions=True)
    assert "heir" in order
    assert admission.load("d") == (0, 0)


def test_parse_priority() -> None:
    assert parse_priority("interactive") == 0
    assert parse_priority("BATCH") == 9
    assert parse_priority("3") == 3
    assert parse_priority("42", default=5) == 5
    assert parse_priority(None, default=2) == 2
