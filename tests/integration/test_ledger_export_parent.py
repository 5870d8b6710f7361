"""`export(parent_id=...)`, behind `hybridfast ledger export --parent-id`: the store's own query
returns one prompt chain's steps, in order, within the time window, from the SQLite file (the
core's query, through a partial index) and from PostgreSQL (a WHERE on an index it creates),
rather than every entry for the CLI to sift."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridfast import _core
from hybridfast.cli import main
from hybridfast.ledger.stores import PostgresStore, SqliteStore, Store
from hybridfast.types import Caller, LedgerRecord, Usage

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _fill(store: Store) -> dict[str, int]:
    """40 entries: three chains interleaved with plain requests. Their ts_ms by request id."""
    books = _core.Ledger()
    for i in range(40):
        record = LedgerRecord(
            request_id=f"r{i}",
            caller=Caller(key_name="k"),
            route="chat",
            deployment="chat#0",
            provider="openai",
            model="m",
            usage=Usage(input_tokens=3, output_tokens=2),
            cost=5 + i,
            latency_ms=1.0,
            ttft_ms=None,
            status=200,
            parent_id=f"c{i % 3}" if i % 2 == 0 else None,
        )
        books.settle(0, record, "chat")
    written = 0
    while written < 40:
        written += store.write_step(books, 1.0)
    return {e["request_id"]: int(e["ts_ms"]) for e in store.export(None, None)}


def _check(store: Store) -> None:
    ts = _fill(store)
    chain = [f"r{i}" for i in range(40) if i % 2 == 0 and i % 3 == 1]
    rows = list(store.export(None, None, "c1"))
    assert [r["request_id"] for r in rows] == chain  # in order, nothing else
    assert {r["parent_id"] for r in rows} == {"c1"}
    assert [r["cost"] for r in rows] == [5 + int(r[1:]) for r in chain]
    # The time window still applies.
    since = ts["r22"]
    late = [r["request_id"] for r in store.export(since, None, "c1")]
    assert late == [r for r in chain if ts[r] >= since]
    assert list(store.export(None, None, "nope")) == []
    assert len(list(store.export(None, None))) == 40  # no filter: everything


def test_sqlite_export_by_parent_id(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "ledger.db"))
    try:
        _check(store)
    finally:
        store.close()


@pytest.fixture
def pg_store() -> Iterator[PostgresStore]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"export_{uuid.uuid4().hex[:10]}"
    try:
        store = PostgresStore(PG_DSN, schema)
    except _core.StorageError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.postgres
def test_postgres_export_by_parent_id(pg_store: PostgresStore) -> None:
    import psycopg

    _check(pg_store)
    # The filter is the server's, and an index serves it (the planner picks a scan on a
    # table this small unless told not to).
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_store.schema}"')
        conn.execute("SET enable_seqscan = off")
        plan: list[Any] = conn.execute(
            "EXPLAIN SELECT * FROM ledger_entries WHERE parent_id = %s ORDER BY id", ("c1",)
        ).fetchall()
    assert "ledger_entries_parent" in " ".join(str(row[0]) for row in plan)


def test_cli_exports_one_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.db"
    store = SqliteStore(str(db))
    _fill(store)
    store.close()
    config = tmp_path / "hybridfast.yaml"
    config.write_text(f'ledger: {{backend: sqlite, path: "{db}"}}\n', encoding="utf-8")
    argv = ["ledger", "--config", str(config), "export", "--parent-id", "c2", "--format", "csv"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ts_ms,request_id,")
    ids = [line.split(",")[1] for line in lines[1:]]
    assert ids == [f"r{i}" for i in range(40) if i % 2 == 0 and i % 3 == 2]
