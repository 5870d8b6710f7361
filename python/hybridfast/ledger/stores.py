"""Where the ledger's entries live: a SQLite file (default) or PostgreSQL.

Each store has a background writer thread (never the event loop) that takes every entry
settled since its last commit and writes them in one transaction: group commit. When the
commit returns, the writer reports the highest sequence number it holds, and `settle`
calls waiting on those entries return. So "acknowledged" means "committed": a settle
that returned survives `kill -9` of the server (the commit is in SQLite's write-ahead log,
which the OS holds even when the process dies), and, with SQLite's `synchronous: full`
(an fsync per group commit) or PostgreSQL's default, a power cut.

The SQLite writes happen in the native core with the interpreter released
(`SqliteJournal.flush`); PostgreSQL's use psycopg's COPY from the writer thread.

Both stores also keep the budgets changed through the admin API (`ledger_budgets`), so
they outlive a restart, and answer the CLI's and admin API's export queries.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from hybridfast import _core
from hybridfast.config import LedgerConfig
from hybridfast.errors import ConfigError
from hybridfast.ledger import metrics
from hybridfast.ledger.budgets import Budget

log = logging.getLogger("hybridfast.ledger")

# The columns of an entry, in the order of the core's `take_pending` tuples (after seq).
COLUMNS = (
    "ts_ms",
    "request_id",
    "key_name",
    "user_name",
    "team",
    "tags",
    "route",
    "deployment",
    "model_group",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost",
    "saved_cost",
    "latency_ms",
    "ttft_ms",
    "status",
    "cache",
    "fallbacks",
    "estimated",
    "parent_id",
)
# Columns added after the first release: a PostgreSQL table from before gets them (nullable:
# no rewrite, old rows read NULL). The SQLite store migrates in the core the same way.
_PG_ADDED = ("parent_id",)

# The SQLite store's schema (with this table) lives in the core; PostgreSQL's is here.
_BUDGETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_budgets (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    window TEXT NOT NULL,
    limit_picos BIGINT NOT NULL,
    soft_fraction DOUBLE PRECISION NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name, window)
)
"""
# PostgreSQL reads `window` as a keyword in some positions; quoting works in both.
_BUDGETS_SCHEMA = _BUDGETS_SCHEMA.replace("    window TEXT", '    "window" TEXT').replace(
    "(scope, name, window)", '(scope, name, "window")'
)


class Store(Protocol):
    def rebuild(self, books: _core.Ledger) -> int: ...
    def write_step(self, books: _core.Ledger, timeout_s: float) -> int: ...
    def budget_overrides(self) -> list[tuple[Budget, bool]]: ...
    def save_budget(self, budget: Budget, deleted: bool = False) -> None: ...
    def export(
        self, since_ms: int | None, until_ms: int | None, parent_id: str | None = None
    ) -> Iterator[dict[str, Any]]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))


def _where(
    since_ms: int | None, until_ms: int | None, mark: str, parent_id: str | None = None
) -> tuple[str, list[int | str]]:
    clauses: list[str] = []
    params: list[int | str] = []
    if parent_id is not None:
        clauses.append(f"parent_id = {mark}")
        params.append(parent_id)
    if since_ms is not None:
        clauses.append(f"ts_ms >= {mark}")
        params.append(since_ms)
    if until_ms is not None:
        clauses.append(f"ts_ms < {mark}")
        params.append(until_ms)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class SqliteStore:
    """The ledger in a SQLite file (WAL).

    Every access to the file from this process goes through the native journal's one
    connection, never Python's `sqlite3`: SQLite's POSIX locks are per process, so a second
    SQLite library closing the same file drops the first one's locks (and may delete its
    write-ahead log under it)."""

    def __init__(self, path: str, *, synchronous_full: bool = False, read_only: bool = False):
        self.path = path
        # Whether a commit waits for an fsync (ms): the ledger then commits off the event loop.
        self.synchronous_full = synchronous_full
        self.journal = _core.SqliteJournal(path, synchronous_full, read_only)

    def rebuild(self, books: _core.Ledger) -> int:
        return self.journal.load_into(books)

    def write_step(self, books: _core.Ledger, timeout_s: float) -> int:
        return self.journal.flush(books, 65_536, timeout_s)

    def budget_overrides(self) -> list[tuple[Budget, bool]]:
        try:
            rows = self.journal.budgets()
        except _core.StorageError:  # a read-only open of a file from before the table
            return []
        return [(Budget(s, n or None, w, lim, f), d) for s, n, w, lim, f, d in rows]

    def save_budget(self, budget: Budget, deleted: bool = False) -> None:
        self.journal.save_budget(
            budget.scope, budget.name, budget.window, budget.limit, budget.soft_fraction, deleted
        )

    def export(
        self, since_ms: int | None, until_ms: int | None, parent_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        after = 0
        while rows := self.journal.export_page(since_ms, until_ms, after, 2048, parent_id):
            for row in rows:
                yield _row_dict(row[1:])
            after = int(rows[-1][0])

    def count(self) -> int:
        return self.journal.count()

    def close(self) -> None:
        pass


_PG_TYPES = {
    "ts_ms": "BIGINT NOT NULL",
    "request_id": "TEXT NOT NULL",
    "tags": "TEXT NOT NULL DEFAULT ''",
    "route": "TEXT NOT NULL",
    "input_tokens": "BIGINT NOT NULL",
    "output_tokens": "BIGINT NOT NULL",
    "cached_input_tokens": "BIGINT NOT NULL",
    "cache_write_tokens": "BIGINT NOT NULL",
    "reasoning_tokens": "BIGINT NOT NULL",
    "cost": "BIGINT NOT NULL",
    "saved_cost": "BIGINT NOT NULL",
    "latency_ms": "DOUBLE PRECISION NOT NULL",
    "ttft_ms": "DOUBLE PRECISION",
    "status": "INTEGER NOT NULL",
    "cache": "TEXT NOT NULL",
    "fallbacks": "INTEGER NOT NULL",
    "estimated": "INTEGER NOT NULL",
}


class PostgresStore:
    """The ledger in PostgreSQL, for several instances sharing one ledger."""

    def __init__(self, dsn: str, schema: str = "public") -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "ledger.backend postgres needs psycopg",
                hint="pip install 'hybridfast[postgres]'",
            ) from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.schema = schema
        self._writer: Any = None
        self._retry: list[tuple[Any, ...]] | None = None
        columns = ", ".join(f"{c} {_PG_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
        with self._connect() as db:
            db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            db.execute(
                "CREATE TABLE IF NOT EXISTS ledger_entries "
                f"(id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {columns})"
            )
            for column in _PG_ADDED:
                db.execute(f"ALTER TABLE ledger_entries ADD COLUMN IF NOT EXISTS {column} TEXT")
            db.execute("CREATE INDEX IF NOT EXISTS ledger_entries_ts ON ledger_entries (ts_ms)")
            # A chain's steps for `export(parent_id=...)`; only they carry a parent, so the
            # partial index costs the other entries nothing.
            db.execute(
                "CREATE INDEX IF NOT EXISTS ledger_entries_parent ON ledger_entries (parent_id) "
                "WHERE parent_id IS NOT NULL"
            )
            db.execute(_BUDGETS_SCHEMA)

    def _connect(self) -> Any:
        try:
            db = self._psycopg.connect(self.dsn, autocommit=False)
        except self._psycopg.OperationalError as exc:
            raise _core.StorageError(
                f"ledger store: cannot connect to PostgreSQL ({exc})"
            ) from None
        with db.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
        db.commit()
        return db

    def rebuild(self, books: _core.Ledger) -> int:
        count = 0
        with self._connect() as db, db.cursor() as cur:
            cur.execute(_core.LEDGER_SUMMARY_QUERY)
            for row in cur:
                hour, key, user, team, group, deployment, provider, route, *sums = row
                sums = [int(s or 0) for s in sums]
                books.load_summary(hour, key, user, team, group, deployment, provider, route, *sums)
                count += sums[0]
        return count

    def write_step(self, books: _core.Ledger, timeout_s: float) -> int:
        rows = self._retry or books.take_pending(16_384, timeout_s)
        if not rows:
            return 0
        self._retry = rows
        try:
            if self._writer is None or self._writer.closed:
                self._writer = self._connect()
            with (
                self._writer.cursor() as cur,
                cur.copy(f"COPY ledger_entries ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    # seq is not stored; `estimated` is a 0/1 integer as in SQLite.
                    copy.write_row((*row[1:-2], int(row[-2]), row[-1]))
            self._writer.commit()
        except self._psycopg.Error as exc:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            self._writer = None
            raise _core.StorageError(f"ledger store: PostgreSQL write failed ({exc})") from None
        self._retry = None
        return int(rows[-1][0])

    def budget_overrides(self) -> list[tuple[Budget, bool]]:
        with self._connect() as db, db.cursor() as cur:
            cur.execute(
                'SELECT scope, name, "window", limit_picos, soft_fraction, deleted '
                "FROM ledger_budgets"
            )
            rows = cur.fetchall()
        return [
            (Budget(s, n or None, w, int(lim), float(f)), bool(d)) for s, n, w, lim, f, d in rows
        ]

    def save_budget(self, budget: Budget, deleted: bool = False) -> None:
        with self._connect() as db, db.cursor() as cur:
            cur.execute(
                'INSERT INTO ledger_budgets (scope, name, "window", limit_picos, soft_fraction, '
                'deleted) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scope, name, "window") '
                "DO UPDATE SET limit_picos = excluded.limit_picos, "
                "soft_fraction = excluded.soft_fraction, deleted = excluded.deleted",
                (
                    budget.scope,
                    budget.name or "",
                    budget.window,
                    budget.limit,
                    budget.soft_fraction,
                    int(deleted),
                ),
            )
            db.commit()

    def export(
        self, since_ms: int | None, until_ms: int | None, parent_id: str | None = None
    ) -> Iterator[dict[str, Any]]:
        where, params = _where(since_ms, until_ms, "%s", parent_id)
        with self._connect() as db, db.cursor(name="ledger_export") as cur:
            cur.execute(
                f"SELECT {', '.join(COLUMNS)} FROM ledger_entries{where} ORDER BY id", params
            )
            for row in cur:
                yield _row_dict(row)

    def count(self) -> int:
        with self._connect() as db, db.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM ledger_entries")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None


def open_store(config: LedgerConfig, *, read_only: bool = False) -> Store | None:
    """The configured store (None for `backend: memory`)."""
    if config.backend == "memory":
        return None
    if config.backend == "postgres":
        if not config.dsn:
            raise ConfigError("ledger.dsn: the postgres backend needs a dsn")
        return PostgresStore(config.dsn, config.schema)
    return SqliteStore(
        config.path, synchronous_full=config.synchronous == "full", read_only=read_only
    )


class Checkpointer:
    """The thread that copies the SQLite write-ahead log into the database file when the
    event loop commits (`NativeLedger` at `synchronous: normal`). Left to SQLite, that copy
    and its fsyncs run inside the commit that crosses ~1000 pages of log: a stall of
    several milliseconds on the loop every few hundred requests. A PASSIVE checkpoint on
    a second connection never blocks the loop's commits."""

    def __init__(self, store: SqliteStore, *, interval_s: float = 0.2) -> None:
        self._store = store
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="hybridfast-ledger-checkpoint", daemon=True
        )

    def start(self) -> None:
        self._store.journal.leave_checkpoints_to_caller()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self._store.journal.checkpoint()
            except _core.StorageError as exc:  # the log keeps growing until one succeeds
                log.warning("ledger: checkpoint failed (%s); retrying", exc)

    def stop(self) -> None:
        """Ends the thread after a last checkpoint (blocking: call it off the loop)."""
        self._stopping.set()
        self._thread.join(10)
        with contextlib.suppress(_core.StorageError):
            self._store.journal.checkpoint()


class Writer:
    """The background thread that moves settled entries from the core into the store and
    reports, after each commit, the highest sequence number now durable."""

    def __init__(
        self,
        store: Store,
        books: _core.Ledger,
        on_durable: Callable[[int], None],
        *,
        poll_s: float = 0.005,
    ) -> None:
        self._store = store
        self._books = books
        self._on_durable = on_durable
        self._poll_s = max(poll_s, 0.001)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridfast-ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.05
        while True:
            stopping = self._stopping.is_set()
            try:
                seq = self._store.write_step(self._books, 0.0 if stopping else self._poll_s)
            except _core.StorageError as exc:
                metrics.WRITE_ERRORS.inc()
                log.error("ledger: %s; retrying in %.2fs", exc, backoff)
                if (
                    stopping
                    and self._give_up_at is not None
                    and time.monotonic() > self._give_up_at
                ):
                    log.error("ledger: %d entries could not be stored", self._books.pending_len())
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if seq:
                self._on_durable(seq)
            elif stopping and self._books.pending_len() == 0:
                return

    _give_up_at: float | None = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, then ends the thread (blocking: call it off the loop)."""
        self._give_up_at = time.monotonic() + timeout_s
        self._stopping.set()
        self._books.wake()
        self._thread.join(timeout_s + 1)
