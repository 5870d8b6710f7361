"""The request log: one row per request beside the ledger (a SQLite file next to the
ledger's — `hybridfast-ledger-requests.db` for `hybridfast-ledger.db` — or the ledger's
PostgreSQL database and schema), for the admin API and the dashboard to browse.

Rows are queued by the event loop (a deque append) and written by one background thread
in batches, one transaction per batch (group commit), so a request never waits on the
disk. Old rows are deleted in small chunks after `retention_days`.

Queries page with a keyset cursor on `(ts_ms, id)` (newest first), never OFFSET, and each
filter has an index that starts with its column, so a page costs the same on the first
page of ten rows and the last page of ten million.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hybridfast import _core
from hybridfast.errors import InvalidRequest
from hybridfast.observability.record import ROW_FIELDS, RequestRecord

log = logging.getLogger("hybridfast.request_log")

TABLE = "request_log"
MAX_PAGE = 1000
# Columns an admin filter may match exactly, and the index that serves it.
FILTER_COLUMNS = (
    "request_id",
    "key_name",
    "team",
    "model",
    "route",
    "deployment",
    "status",
    "cache",
    "code",
    "parent_id",
)
_INDEXED = ("key_name", "team", "model", "status")
# Columns added after the first release, with their types: a table from before gets them by
# ALTER TABLE ADD COLUMN when the log opens (nullable, so no rewrite; old rows read NULL).
ADDED_COLUMNS = (("parent_id", "TEXT"),)

_COLUMNS_SQL = """
    ts_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    trace_id TEXT,
    endpoint TEXT NOT NULL,
    route TEXT,
    deployment TEXT,
    provider TEXT,
    model TEXT,
    key_name TEXT,
    team TEXT,
    user_name TEXT,
    status INTEGER NOT NULL,
    code TEXT,
    stream INTEGER NOT NULL,
    cache TEXT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_picos BIGINT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    overhead_ms DOUBLE PRECISION,
    fallbacks INTEGER NOT NULL,
    recovered INTEGER NOT NULL,
    parent_id TEXT
"""


def schema_statements(id_column: str, present: Sequence[str] = ()) -> list[str]:
    """CREATE statements for the table and its indexes (`id_column` differs per engine);
    `present`: the columns of an existing table, which gets the ones added since."""
    statements = [f"CREATE TABLE IF NOT EXISTS {TABLE} ({id_column},{_COLUMNS_SQL})"]
    if present:
        statements += [
            f"ALTER TABLE {TABLE} ADD COLUMN {name} {kind}"
            for name, kind in ADDED_COLUMNS
            if name not in present
        ]
    statements.append(f"CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts_ms, id)")
    statements.append(f"CREATE INDEX IF NOT EXISTS {TABLE}_request ON {TABLE} (request_id)")
    # Partial: only a chain's steps have a parent, so the index costs the others nothing.
    statements.append(
        f"CREATE INDEX IF NOT EXISTS {TABLE}_parent ON {TABLE} (parent_id) "
        "WHERE parent_id IS NOT NULL"
    )
    statements += [
        f"CREATE INDEX IF NOT EXISTS {TABLE}_{column} ON {TABLE} ({column}, ts_ms, id)"
        for column in _INDEXED
    ]
    return statements


@dataclass(frozen=True, slots=True)
class Query:
    """One page request: filters, a time range (ms), the cursor of the previous page."""

    filters: tuple[tuple[str, Any], ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: tuple[int, int] | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(ts_ms: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts_ms}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        ts, _, row_id = raw.partition(":")
        return int(ts), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            "`cursor` is not a cursor this API returned",
            hint="pass the `next_cursor` of the previous page unchanged",
        ) from None


def select_sql(query: Query, mark: str) -> tuple[str, list[Any]]:
    """The page's SELECT (newest first) with `mark` as the parameter placeholder."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in query.filters:
        if column not in FILTER_COLUMNS:  # the admin layer checks; this is the last line
            raise InvalidRequest(f"cannot filter on {column!r}")
        where.append(f"{column} = {mark}")
        params.append(value)
    if query.since_ms is not None:
        where.append(f"ts_ms >= {mark}")
        params.append(query.since_ms)
    upper = query.until_ms
    if query.cursor is not None:
        ts, row_id = query.cursor
        # The range condition on ts_ms alone lets every (column, ts_ms, id) index serve it;
        # the tie on equal timestamps is settled by id.
        upper = ts if upper is None else min(upper, ts)
        where.append(f"(ts_ms < {mark} OR id < {mark})")
        params += [ts, row_id]
    if upper is not None:
        where.append(f"ts_ms <= {mark}")
        params.append(upper)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    sql = (
        f"SELECT id, {', '.join(ROW_FIELDS)} FROM {TABLE}{clause} "
        f"ORDER BY ts_ms DESC, id DESC LIMIT {int(query.limit) + 1}"
    )
    return sql, params


def to_page(rows: Sequence[Sequence[Any]], limit: int) -> Page:
    out = [_row_dict(r) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit and out:
        cursor = encode_cursor(out[-1]["ts_ms"], out[-1]["id"])
    return Page(out, cursor)


def _row_dict(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(("id", *ROW_FIELDS), row, strict=True))
    d["stream"] = bool(d["stream"])
    d["recovered"] = bool(d["recovered"])
    return d


class Backend(Protocol):
    """Where rows go: one engine's connection handling."""

    def write(self, rows: list[tuple[Any, ...]]) -> None: ...
    def delete_before(self, ts_ms: int, chunk: int) -> int: ...
    def page(self, query: Query) -> Page: ...
    def close(self) -> None: ...


class SqliteBackend:
    """A SQLite file of its own (never the ledger's: see `LedgerConfig.sibling`), or a
    private in-memory database when the ledger keeps nothing on disk. One connection
    writes (the writer thread), one reads (admin queries); WAL lets them run at the same
    time. Both are the core's (`_core.SqliteRows`): a batch is converted in one call and
    written with the interpreter lock released, where Python's `sqlite3` would bind and
    step it with the lock held between steps, taking it from the event loop for the whole
    batch (and the core's SQLite must be the only one on the file, see `SqliteRows`)."""

    def __init__(self, path: str | None, *, synchronous_full: bool = False) -> None:
        if path is None:
            target, uri = (
                f"file:hybridfast-requests-{uuid.uuid4().hex}?mode=memory&cache=shared",
                True,
            )
        else:
            target, uri = path, False
        self._writer = _core.SqliteRows(target, uri, synchronous_full)
        present = [str(r[1]) for r in self._writer.query(f"PRAGMA table_info({TABLE})")]
        self._writer.execute_all(schema_statements("id INTEGER PRIMARY KEY", present))
        self._reader = _core.SqliteRows(target, uri)
        marks = ", ".join("?" * len(ROW_FIELDS))
        self._insert = f"INSERT INTO {TABLE} ({', '.join(ROW_FIELDS)}) VALUES ({marks})"

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self._writer.insert_all(self._insert, rows)

    def delete_before(self, ts_ms: int, chunk: int) -> int:
        return self._writer.execute(
            f"DELETE FROM {TABLE} WHERE id IN "
            f"(SELECT id FROM {TABLE} WHERE ts_ms < ? ORDER BY ts_ms LIMIT ?)",
            (ts_ms, chunk),
        )

    def page(self, query: Query) -> Page:
        sql, params = select_sql(query, "?")
        return to_page(self._reader.query(sql, params), query.limit)

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


class PostgresBackend:
    """The ledger's PostgreSQL database and schema; rows are written with COPY."""

    def __init__(self, dsn: str, schema: str = "public") -> None:
        import psycopg  # optional dependency (the `postgres` extra)

        self._psycopg = psycopg
        self._dsn = dsn
        self._schema = schema
        self._writer = self._connect()
        present = [
            r[0]
            for r in self._writer.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                (schema, TABLE),
            )
        ]
        with self._writer.transaction():
            for statement in schema_statements("id BIGINT GENERATED ALWAYS AS IDENTITY", present):
                self._writer.execute(statement)
        self._reader = self._connect()
        self._read_lock = threading.Lock()

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self._dsn, autocommit=True)
        conn.execute(f'SET search_path TO "{self._schema}"')
        return conn

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        with (
            self._writer.transaction(),
            self._writer.cursor() as cur,
            cur.copy(f"COPY {TABLE} ({', '.join(ROW_FIELDS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def delete_before(self, ts_ms: int, chunk: int) -> int:
        cur = self._writer.execute(
            f"DELETE FROM {TABLE} WHERE id IN "
            f"(SELECT id FROM {TABLE} WHERE ts_ms < %s ORDER BY ts_ms LIMIT %s)",
            (ts_ms, chunk),
        )
        return int(cur.rowcount)

    def page(self, query: Query) -> Page:
        sql, params = select_sql(query, "%s")
        with self._read_lock:
            rows = self._reader.execute(sql, params).fetchall()
        return to_page(rows, query.limit)

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


class RequestLog:
    """The queue, the writer thread and the query side of the request log."""

    def __init__(
        self,
        backend: Backend,
        *,
        flush_interval_s: float = 0.2,
        retention_days: float | None = 30.0,
        max_pending: int = 200_000,
    ) -> None:
        self.backend = backend
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._flush_interval_s = flush_interval_s
        self._retention_ms = None if not retention_days else int(retention_days * 86_400_000)
        self._max_pending = max_pending
        self._wake = threading.Event()
        self._stopping = False
        self._written = 0
        self.dropped = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def add(self, record: RequestRecord) -> None:
        """Queues one row (event loop; a deque append, no I/O)."""
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()  # the disk cannot keep up: keep the newest rows
            self.dropped += 1
        self._pending.append(record.row())

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def page(self, query: Query) -> Page:
        return await asyncio.to_thread(self.backend.page, query)

    def flush(self) -> None:
        """Writes everything queued so far (the writer thread, or `close`)."""
        while self._pending:
            batch: list[tuple[Any, ...]] = []
            pending = self._pending
            with contextlib.suppress(IndexError):
                while len(batch) < 20_000:
                    batch.append(pending.popleft())
            try:
                self.backend.write(batch)
                self._written += len(batch)
            except Exception:
                self.write_errors += 1
                log.warning("request log: a batch of %d rows failed", len(batch), exc_info=True)
                for row in reversed(batch):  # keep them for the next try
                    pending.appendleft(row)
                return

    def _run(self) -> None:
        next_trim = 0.0
        while not self._stopping:
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            self.flush()
            if self._retention_ms is not None and time.monotonic() >= next_trim:
                next_trim = time.monotonic() + 60.0
                self._trim()

    def _trim(self) -> None:
        assert self._retention_ms is not None
        cutoff = int(time.time() * 1000) - self._retention_ms
        try:
            while self.backend.delete_before(cutoff, 10_000) >= 10_000 and not self._stopping:
                pass
        except Exception:
            log.warning("request log: retention delete failed", exc_info=True)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(10)
        self.flush()
        self.backend.close()
