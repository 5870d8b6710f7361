"""`parent_id` (a prompt chain's request id on each of its steps) in stores written before the
column existed: the request log (SQLite, PostgreSQL) and the PostgreSQL ledger open such a
table, add the column, keep the old rows (NULL parent) and filter new ones by it. The SQLite
ledger's migration is tested in the core (`cargo test -p hybridfast-core before_parent`)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hybridfast import _core
from hybridfast.ledger.stores import COLUMNS, PostgresStore
from hybridfast.observability import request_log as rl
from hybridfast.observability.record import ROW_FIELDS, RequestRecord
from hybridfast.types import Caller, LedgerRecord, Usage

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
# The request log's table as the release before parent_id created it.
OLD_COLUMNS = rl._COLUMNS_SQL.replace(",\n    parent_id TEXT", "")


def _record(request_id: str, parent_id: str | None = None) -> RequestRecord:
    return RequestRecord(
        ts_ms=int(time.time() * 1000),
        request_id=request_id,
        endpoint="chat",
        status=200,
        route="chat",
        parent_id=parent_id,
    )


def _old_row(conn: Any, mark: str) -> None:
    names = ", ".join(f for f in ROW_FIELDS if f != "parent_id")
    values = _record("old").row()[:-1]
    conn.execute(
        f"INSERT INTO {rl.TABLE} ({names}) VALUES ({', '.join([mark] * len(values))})", values
    )


def _check(backend: rl.Backend) -> None:
    backend.write([_record("step1", "chain").row(), _record("chain", "chain").row()])
    page = backend.page(rl.Query(filters=(("parent_id", "chain"),)))
    assert sorted(r["request_id"] for r in page.rows) == ["chain", "step1"]
    old = backend.page(rl.Query(filters=(("request_id", "old"),))).rows
    assert [r["parent_id"] for r in old] == [None]


def test_sqlite_request_log_from_before_parent_id(tmp_path: Path) -> None:
    path = str(tmp_path / "requests.db")
    with sqlite3.connect(path) as conn:
        assert "parent_id" not in OLD_COLUMNS
        conn.execute(f"CREATE TABLE {rl.TABLE} (id INTEGER PRIMARY KEY,{OLD_COLUMNS})")
        _old_row(conn, "?")
    conn.close()
    backend = rl.SqliteBackend(path)
    try:
        _check(backend)
    finally:
        backend.close()
    # Opening it again finds the column and adds nothing.
    rl.SqliteBackend(path).close()


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    schema = f"parent_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_request_log_from_before_parent_id() -> None:
    import psycopg

    with _pg_schema() as schema:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(
                f"CREATE TABLE {rl.TABLE} (id BIGINT GENERATED ALWAYS AS IDENTITY,{OLD_COLUMNS})"
            )
            _old_row(conn, "%s")
        backend = rl.PostgresBackend(PG_DSN, schema)
        try:
            _check(backend)
        finally:
            backend.close()


def test_postgres_ledger_from_before_parent_id() -> None:
    import psycopg

    with _pg_schema() as schema:
        old = [c for c in COLUMNS if c != "parent_id"]
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(
                "CREATE TABLE ledger_entries (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                + ", ".join(f"{c} TEXT" for c in old)
                + ")"
            )
            conn.execute(
                f"INSERT INTO ledger_entries ({', '.join(old)}) VALUES "
                f"({', '.join(['%s'] * len(old))})",
                (1, "old", *[None] * (len(old) - 2)),
            )
        store = PostgresStore(PG_DSN, schema)
        books = _core.Ledger()
        usage = Usage(input_tokens=3, output_tokens=2)
        for request_id in ("chain-step1", "chain"):
            record = LedgerRecord(
                request_id=request_id,
                caller=Caller(key_name="k"),
                route="chat",
                deployment="chat#0",
                provider="openai",
                model="m",
                usage=usage,
                cost=5,
                latency_ms=1.0,
                ttft_ms=None,
                status=200,
                parent_id="chain",
            )
            books.settle(0, record, "chat")
        try:
            assert store.write_step(books, 1.0) > 0
            rows = {r["request_id"]: r["parent_id"] for r in store.export(None, None)}
        finally:
            store.close()
        assert rows == {"old": None, "chain-step1": "chain", "chain": "chain"}
