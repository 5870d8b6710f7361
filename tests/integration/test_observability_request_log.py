"""The request log's store: rows written in batches by its thread, pages by keyset cursor
(every row exactly once, newest first), filters, retention — on a real SQLite file and a
real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridfast import _core
from hybridfast.config import parse_config
from hybridfast.errors import InvalidRequest
from hybridfast.observability.observer import open_request_log
from hybridfast.observability.record import RequestRecord
from hybridfast.observability.request_log import (
    Backend,
    PostgresBackend,
    Query,
    RequestLog,
    SqliteBackend,
    decode_cursor,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def record(i: int, ts_ms: int, **kw: object) -> RequestRecord:
    fields: dict[str, object] = {
        "ts_ms": ts_ms,
        "request_id": f"req-{i}",
        "endpoint": "chat",
        "status": 200,
        "route": "chat",
        "deployment": "chat#0",
        "model": "m0" if i % 2 else "m1",
        "key_name": f"key{i % 3}",
        "team": "red" if i % 2 else "blue",
        "cost_picos": 1000 * i,
        "latency_ms": 1.5,
    }
    fields.update(kw)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def _sqlite(tmp_path: Path) -> Backend:
    return SqliteBackend(str(tmp_path / "ledger.db"))


@contextlib.contextmanager
def _postgres() -> Iterator[Backend]:
    """The request log in a schema of its own, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"reqlog_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    try:
        yield PostgresBackend(PG_DSN, schema)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite(tmp_path)
    else:
        with _postgres() as backend:
            yield backend


def _filled(backend: Backend, n: int) -> RequestLog:
    log = RequestLog(backend, flush_interval_s=0.01, retention_days=None)
    base = 1_700_000_000_000
    for i in range(n):
        # Several rows share each millisecond: the cursor must settle ties by id.
        log.add(record(i, base + i // 4))
    log.flush()
    return log


async def test_pages_cover_every_row_once_newest_first(backend: Backend) -> None:
    log = _filled(backend, 103)
    seen: list[str] = []
    cursor = None
    while True:
        page = await log.page(Query(limit=10, cursor=cursor))
        seen += [r["request_id"] for r in page.rows]
        if page.next_cursor is None:
            break
        cursor = decode_cursor(page.next_cursor)
    assert seen == [f"req-{i}" for i in reversed(range(103))]
    log.close()


async def test_filters_and_time_range(backend: Backend) -> None:
    log = _filled(backend, 60)
    page = await log.page(Query(filters=(("team", "red"), ("key_name", "key1")), limit=100))
    ids = {r["request_id"] for r in page.rows}
    assert ids == {f"req-{i}" for i in range(60) if i % 2 and i % 3 == 1}
    assert all(r["team"] == "red" and r["key_name"] == "key1" for r in page.rows)
    base = 1_700_000_000_000
    page = await log.page(Query(since_ms=base + 5, until_ms=base + 6, limit=100))
    assert {r["request_id"] for r in page.rows} == {f"req-{i}" for i in range(20, 28)}
    one = await log.page(Query(filters=(("request_id", "req-7"),), limit=1))
    assert one.rows[0]["cost_picos"] == 7000
    assert one.rows[0]["model"] == "m0"
    log.close()


async def test_a_batch_is_written_by_the_thread_without_a_flush_call(backend: Backend) -> None:
    log = RequestLog(backend, flush_interval_s=0.01, retention_days=None)
    log.add(record(1, int(time.time() * 1000), status=499, code="ERR_CLIENT_GONE"))
    for _ in range(500):
        page = await log.page(Query(limit=10))
        if page.rows:
            break
        await asyncio.sleep(0.01)
    assert [(r["status"], r["code"]) for r in page.rows] == [(499, "ERR_CLIENT_GONE")]
    log.close()


def test_retention_deletes_old_rows(tmp_path: Path) -> None:
    backend = _sqlite(tmp_path)
    log = RequestLog(backend, flush_interval_s=3600, retention_days=1)
    now = int(time.time() * 1000)
    log.add(record(1, now - 3 * 86_400_000))
    log.add(record(2, now))
    log.flush()
    log._trim()
    page = backend.page(Query(limit=10))
    assert [r["request_id"] for r in page.rows] == ["req-2"]
    log.close()


def test_a_cursor_that_was_not_returned_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        decode_cursor("not-a-cursor!")


def test_the_request_log_never_opens_the_ledgers_sqlite_file(tmp_path: Path) -> None:
    """The ledger's file belongs to the core's SQLite; a second SQLite library on the same
    file in one process loses committed ledger entries under concurrent writes."""
    ledger = tmp_path / "books.db"
    config = parse_config(f"ledger: {{backend: sqlite, path: {ledger}}}\n").config
    log = open_request_log(config)
    assert log is not None
    log.close()
    assert config.ledger.sibling("requests") == str(tmp_path / "books-requests.db")
    assert (tmp_path / "books-requests.db").exists()
    assert not ledger.exists()


def test_no_python_store_opens_the_ledgers_sqlite_file(tmp_path: Path) -> None:
    """Keys, stored responses and feedback keep their tables in files of their own too."""
    from hybridfast.experiments.feedback import SqliteStore
    from hybridfast.responses_store import open_responses_store
    from hybridfast.security.keys import KeyStore

    ledger = tmp_path / "books.db"
    config = parse_config(f"ledger: {{backend: sqlite, path: {ledger}}}\n").config
    KeyStore.open(config.ledger)
    open_responses_store(config)
    SqliteStore(config.ledger.sibling("feedback"))
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db")
    assert names == ["books-feedback.db", "books-keys.db", "books-responses.db"]
    assert not ledger.exists()


@pytest.mark.parametrize("n", [0, 1, 3, 33, 300])
def test_sqlite_rows_go_in_each_once(tmp_path: Path, n: int) -> None:
    backend = SqliteBackend(str(tmp_path / "ledger.db"))
    base = 1_700_000_000_000
    backend.write([record(i, base + i).row() for i in range(n)])
    page = backend.page(Query(limit=1000))
    assert sorted(r["request_id"] for r in page.rows) == sorted(f"req-{i}" for i in range(n))
    backend.close()


def test_a_batch_with_a_bad_row_writes_none_of_it(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "ledger.db"))
    good = record(1, 1_700_000_000_000).row()
    bad = (None, *good[1:])  # ts_ms is NOT NULL
    with pytest.raises(_core.StorageError):
        backend.write([good, bad])
    assert backend.page(Query(limit=10)).rows == []
    with pytest.raises(_core.InvalidArgumentError):
        backend.write([(object(), *good[1:])])
    backend.write([good])  # the connection is still usable
    assert [r["request_id"] for r in backend.page(Query(limit=10)).rows] == ["req-1"]
    backend.close()


def test_a_page_of_the_in_memory_log_does_not_fail_on_a_batch_being_written() -> None:
    """Without a ledger file the log is a shared in-memory database, which locks per table:
    a page asked for while the writer's batch was open failed ("table is locked")."""
    backend = SqliteBackend(None)
    backend.write([record(1, 1_700_000_000_000).row()])
    backend._writer.execute("BEGIN IMMEDIATE")
    backend._writer.execute(backend._insert, record(2, 1_700_000_000_001).row())
    assert len(backend.page(Query(limit=10)).rows) >= 1
    backend._writer.execute("COMMIT")
    assert len(backend.page(Query(limit=10)).rows) == 2
    backend.close()


def test_the_writer_releases_the_interpreter_while_sqlite_waits(tmp_path: Path) -> None:
    """A batch waiting on SQLite (here: another connection holds the write lock) must not
    hold the interpreter lock: the event loop's thread keeps running meanwhile."""
    path = str(tmp_path / "requests.db")
    backend = SqliteBackend(path)
    blocker = _core.SqliteRows(path)
    blocker.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def write() -> None:
        backend.write([record(1, 1_700_000_000_000).row()])
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    spins = 0
    while spins < 1000 and not done.is_set():
        spins += 1  # runs only while the writer does not hold the interpreter
        time.sleep(0.001)
    assert not done.is_set()  # still waiting for the lock, and this thread ran meanwhile
    blocker.execute("COMMIT")
    thread.join(30)
    assert done.is_set()
    assert len(backend.page(Query(limit=10)).rows) == 1
    blocker.close()
    backend.close()
