"""The ledger commits on the event loop when a commit needs no fsync (SQLite at
`synchronous: normal`, the default), and on a background thread when it does (`full`):
what each guarantees, and that an acknowledged settle is in the file either way."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from hybridfast import _core
from hybridfast.config import parse_config
from hybridfast.ledger import open_ledger
from hybridfast.types import Caller, Deployment, LedgerRecord, Reservation, Usage
from tests.unit.test_ledger_service import stored

USD = _core.PICODOLLARS_PER_USD
SMART = Deployment(
    id="smart#0",
    name="smart",
    provider="openai",
    kind="openai",
    model="gpt-4.1",
    local=False,
    quality=0.8,
    price=_core.Price.per_mtok("2", "8", "0.5"),
)
ALICE = Caller(key_name="alice-key", user="alice", team="research", tags=())


def _record(request_id: str, cost: int) -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        caller=ALICE,
        route="smart",
        deployment="smart#0",
        provider="openai",
        model="gpt-4.1",
        usage=Usage(input_tokens=10, output_tokens=2),
        cost=cost,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
    )


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "hybridfast-ledger"]


@pytest.mark.parametrize(("synchronous", "thread"), [("normal", False), ("full", True)])
async def test_who_commits_follows_the_fsync(
    tmp_path: Path, synchronous: str, thread: bool
) -> None:
    text = f"ledger: {{path: {tmp_path / 'ledger.db'}, synchronous: {synchronous}}}\n"
    before = len(_writer_threads())
    ledger = await open_ledger(parse_config(text).config)
    try:
        # A thread hand-off per request costs ~0.1 ms at 1 concurrent; without an fsync
        # to wait for, the loop commits itself.
        assert len(_writer_threads()) - before == (1 if thread else 0)

        async def one(i: int) -> None:
            r = await ledger.reserve(ALICE, SMART, f"req-{i}", USD)
            await ledger.settle(r, _record(f"req-{i}", i + 1))
            # Acknowledged means committed: another process reads it already.
            if i == 0:
                assert [row[0] for row in stored(tmp_path)] == ["req-0"]

        await one(0)
        await asyncio.gather(*(one(i) for i in range(1, 200)))
        rows = stored(tmp_path)
        assert sorted(str(r[0]) for r in rows) == sorted(f"req-{i}" for i in range(200))
    finally:
        await ledger.close()


async def test_a_failed_commit_on_the_loop_is_retried_and_the_settle_waits(
    tmp_path: Path,
) -> None:
    text = f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    ledger = await open_ledger(parse_config(text).config)
    store = ledger.store
    assert store is not None
    real = store.write_step
    failures = [2]

    def flaky(books: _core.Ledger, timeout_s: float) -> int:
        if failures[0]:
            failures[0] -= 1
            raise _core.StorageError("ledger store: disk I/O error")
        return real(books, timeout_s)

    store.write_step = flaky  # type: ignore[method-assign]
    try:
        r = await ledger.reserve(ALICE, SMART, "req-x", USD)
        settle = asyncio.ensure_future(ledger.settle(r, _record("req-x", 7)))
        await asyncio.sleep(0.01)
        assert not settle.done()  # not acknowledged while the commit fails
        await asyncio.wait_for(settle, 5)
        assert failures[0] == 0
        assert [row[0] for row in stored(tmp_path)] == ["req-x"]
    finally:
        await ledger.close()


async def test_close_writes_what_the_loop_had_not_committed(tmp_path: Path) -> None:
    text = f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    ledger = await open_ledger(parse_config(text).config)
    for i in range(50):
        ledger.record(Reservation(request_id=f"req-{i}", amount=0), _record(f"req-{i}", i))
    await ledger.close()  # before the loop ran the scheduled commit
    assert len(stored(tmp_path)) == 50


def test_commits_leave_the_checkpoint_to_the_second_connection(tmp_path: Path) -> None:
    # SQLite's automatic checkpoint would copy the log (and fsync) inside the commit that
    # crosses ~1000 pages: milliseconds on the event loop. With it left to the caller,
    # the database file does not grow however much is committed, until `checkpoint`.
    path = tmp_path / "ledger.db"
    journal = _core.SqliteJournal(str(path), False)
    journal.leave_checkpoints_to_caller()
    books = _core.Ledger()
    size = path.stat().st_size
    for i in range(3000):  # one commit each: well past 1000 pages of log
        books.settle(0, _record(f"req-{i}", i), "smart")
        assert journal.flush(books) == i + 1
    assert path.stat().st_size == size
    journal.checkpoint()
    assert path.stat().st_size > size
    assert journal.count() == 3000


async def test_the_loop_committing_ledger_checkpoints_on_its_own_thread(tmp_path: Path) -> None:
    text = f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    ledger = await open_ledger(parse_config(text).config)
    try:
        names = [t.name for t in threading.enumerate()]
        assert "hybridfast-ledger-checkpoint" in names
    finally:
        await ledger.close()
    assert "hybridfast-ledger-checkpoint" not in [t.name for t in threading.enumerate()]
