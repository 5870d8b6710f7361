"""Dynamic batching: answers split back to the right callers in order, coalescing,
priorities, the bounded queue (429 + Retry-After), cancellation and failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from hybridfast.embeddings.batcher import BATCH, INTERACTIVE, DynamicBatcher
from hybridfast.errors import RateLimited


class FakeModel:
    """Each text's vector is [len(text), first char code]; batches are recorded; `gate`
    holds a batch inside the model until released (to queue work behind it)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        self.batches.append(list(texts))
        self.entered.set()
        self.gate.wait(5)
        if self.fail:
            raise RuntimeError("model crashed")
        rows = np.array([[len(t), ord(t[0]) if t else 0] for t in texts], dtype=np.float32)
        return rows, [len(t) for t in texts]


def expected(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), ord(t[0]) if t else 0] for t in texts], dtype=np.float32)


async def hold(model: FakeModel, batcher: DynamicBatcher) -> asyncio.Task:
    """Starts a batch that blocks in the model; returns its task."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.create_task(batcher.submit(["blocker"]))
    await asyncio.to_thread(model.entered.wait, 5)
    return task


async def test_concurrent_requests_are_coalesced_and_split_back_in_order() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=64, max_wait_ms=20)
    requests = [[f"{chr(97 + i)}{'x' * j}" for j in range(i % 4 + 1)] for i in range(20)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    for texts, (rows, tokens) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(rows, expected(texts))
        assert tokens == [len(t) for t in texts]
    assert len(model.batches) < len(requests)  # coalesced
    assert sorted(t for b in model.batches for t in b) == sorted(t for r in requests for t in r)
    await batcher.close()


async def test_batches_never_exceed_max_batch_and_big_requests_are_chunked() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=8, max_wait_ms=5)
    big = [f"t{i}" for i in range(30)]
    small = ["s1", "s2", "s3"]
    (rows_big, _), (rows_small, _) = await asyncio.gather(
        batcher.submit(big), batcher.submit(small)
    )
    np.testing.assert_array_equal(rows_big, expected(big))
    np.testing.assert_array_equal(rows_small, expected(small))
    assert max(len(b) for b in model.batches) <= 8
    assert len(model.batches) >= 5
    await batcher.close()


async def test_interactive_requests_go_before_batch_requests() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=2, max_wait_ms=0)
    blocker = await hold(model, batcher)
    bulk = asyncio.create_task(batcher.submit(["b1", "b2", "b3", "b4"], BATCH))
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(batcher.submit(["i1"], INTERACTIVE))
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(blocker, bulk, urgent)
    order = [t for b in model.batches for t in b]
    assert order.index("i1") < order.index("b1")
    await batcher.close()


async def test_full_queue_answers_429_with_retry_after() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=4, max_wait_ms=0, max_queue=5)
    blocker = await hold(model, batcher)
    waiting = asyncio.create_task(batcher.submit(["a", "b", "c", "d"]))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimited) as info:
        await batcher.submit(["e", "f"])
    assert info.value.status == 429
    assert int(info.value.headers["Retry-After"]) >= 1
    model.gate.set()
    await asyncio.gather(blocker, waiting)
    # Room again once the queue drained.
    rows, _ = await batcher.submit(["e", "f"])
    assert rows.shape == (2, 2)
    await batcher.close()


async def test_cancelled_requests_are_not_computed() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=16, max_wait_ms=0)
    blocker = await hold(model, batcher)
    gone = asyncio.create_task(batcher.submit(["cancel-me"]))
    kept = asyncio.create_task(batcher.submit(["keep-me"]))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0)
    model.gate.set()
    await blocker
    rows, _ = await kept
    assert rows.shape == (1, 2)
    assert all("cancel-me" not in b for b in model.batches)
    assert batcher.queued == 0
    with pytest.raises(asyncio.CancelledError):
        await gone
    await batcher.close()


async def test_a_model_failure_reaches_every_caller_and_the_batcher_recovers() -> None:
    model = FakeModel()
    model.fail = True
    batcher = DynamicBatcher(model, max_batch=16, max_wait_ms=10)
    results = await asyncio.gather(
        batcher.submit(["a"]), batcher.submit(["b"]), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    model.fail = False
    rows, _ = await batcher.submit(["c"])
    assert rows[0, 0] == 1
    await batcher.close()


async def test_close_cancels_queued_work() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=1, max_wait_ms=0)
    blocker = await hold(model, batcher)
    queued = asyncio.create_task(batcher.submit(["later"]))
    await asyncio.sleep(0.01)
    model.gate.set()
    await batcher.close()
    for task in (blocker, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(RuntimeError):
        await batcher.submit(["x"])


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(FakeModel(), max_batch=0)


async def test_requests_whose_client_left_are_dropped_before_computing() -> None:
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=16, max_wait_ms=0)
    blocker = await hold(model, batcher)
    left = {"flag": False}
    abandoned = asyncio.create_task(batcher.submit(["abandoned"], gone=lambda: left["flag"]))
    staying = asyncio.create_task(batcher.submit(["staying"], gone=lambda: False))
    await asyncio.sleep(0.01)
    left["flag"] = True  # the connection closed while queued
    model.gate.set()
    await blocker
    await staying
    with pytest.raises(ConnectionResetError):
        await abandoned
    assert all("abandoned" not in b for b in model.batches)
    await batcher.close()


async def test_a_lone_client_does_not_wait_for_company() -> None:
    """Requests further apart than max_wait start at once; a burst waits to coalesce."""
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch=64, max_wait_ms=20)
    for text in ("one", "two", "three", "four"):
        await batcher.submit([text])
        await asyncio.sleep(0.1)
    assert model.batches == [["one"], ["two"], ["three"], ["four"]]
    assert batcher.waits == 0
    for _ in range(3):
        await asyncio.gather(*(batcher.submit([f"c{i}"]) for i in range(8)))
    assert batcher.waits > 0
    assert len(model.batches) < 4 + 3 * 8
    await batcher.close()
