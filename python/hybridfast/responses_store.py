"""Stored Responses API answers: what `previous_response_id`, `GET /v1/responses/{id}` and
`DELETE /v1/responses/{id}` read.

They live in the ledger's database (its SQLite file by default, its PostgreSQL database when
`ledger.backend: postgres`, process memory for `ledger.backend: memory`), in a table of their
own, `responses`. Each row keeps the response object as the client got it, this turn's input
items, and the whole conversation in the gateway's (chat) form, so a continuation needs one
read. Rows expire after `responses.retention_days`; expired rows are never returned and are
deleted in the background of later writes.

A stored response belongs to the API key that created it: another key gets 404 for it, as
it would for an id that does not exist.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hybridfast.config import Config
from hybridfast.errors import ConfigError

# Expired rows are swept at most this often (a write triggers the sweep).
_SWEEP_EVERY_S = 60.0
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "created_at REAL NOT NULL, expires_at REAL NOT NULL, response BLOB NOT NULL, "
    "input_items BLOB NOT NULL, conversation BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at)",
)
_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
    "response BYTEA NOT NULL, input_items BYTEA NOT NULL, conversation BYTEA NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at)",
)


# One text per statement for both databases: written with SQLite's `?` marks,
# `_pg` turns them into psycopg's `%s`.
_INSERT = "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)"
_SELECT = (
    "SELECT id, owner, created_at, response, input_items, conversation "
    "FROM responses WHERE id = ? AND owner = ? AND expires_at > ?"
)
_DELETE = "DELETE FROM responses WHERE id = ? AND owner = ? AND expires_at > ?"
_SWEEP = "DELETE FROM responses WHERE expires_at <= ?"


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


@dataclass(slots=True)
class StoredResponse:
    id: str
    owner: str
    created_at: float
    response: dict[str, Any]
    input_items: list[Any]
    conversation: list[dict[str, Any]]


class ResponsesStore(Protocol):
    async def put(self, item: StoredResponse) -> None: ...

    async def get(self, response_id: str, owner: str) -> StoredResponse | None: ...

    async def delete(self, response_id: str, owner: str) -> bool: ...

    async def close(self) -> None: ...


def _values(item: StoredResponse, retention_s: float) -> tuple[Any, ...]:
    """The row `_INSERT` writes for `item`."""
    return (
        item.id,
        item.owner,
        item.created_at,
        item.created_at + retention_s,
        orjson.dumps(item.response),
        orjson.dumps(item.input_items),
        orjson.dumps(item.conversation),
    )


def _row(values: tuple[Any, ...]) -> StoredResponse:
    rid, owner, created, response, items, conversation = values
    return StoredResponse(
        id=rid,
        owner=owner,
        created_at=float(created),
        response=orjson.loads(response),
        input_items=orjson.loads(items),
        conversation=orjson.loads(conversation),
    )


class MemoryResponses:
    """For `ledger.backend: memory` and tests: gone when the process ends."""

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self._items: dict[str, tuple[float, StoredResponse]] = {}

    async def put(self, item: StoredResponse) -> None:
        now = time.time()
        for key in [k for k, (exp, _) in self._items.items() if exp <= now]:
            del self._items[key]
        self._items[item.id] = (item.created_at + self.retention_s, item)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        found = self._items.get(response_id)
        if found is None or found[0] <= time.time() or found[1].owner != owner:
            return None
        return found[1]

    async def delete(self, response_id: str, owner: str) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        del self._items[response_id]
        return True

    async def close(self) -> None:
        self._items.clear()


class SqliteResponses:
    """A table in the ledger's SQLite file (WAL mode: the ledger's writer and this share it;
    `busy_timeout` waits out the other writer). Calls run on a worker thread."""

    def __init__(self, path: str, retention_s: float) -> None:
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
        for statement in _SQLITE_SCHEMA:
            self._conn.execute(statement)
        self._next_sweep = 0.0

    def _put(self, item: StoredResponse) -> None:
        now = time.time()
        with self._lock:
            self._conn.execute(
                _INSERT.replace("INSERT", "INSERT OR REPLACE", 1),
                _values(item, self.retention_s),
            )
            if now >= self._next_sweep:
                self._next_sweep = now + _SWEEP_EVERY_S
                self._conn.execute(_SWEEP, (now,))

    def _get(self, response_id: str, owner: str) -> StoredResponse | None:
        with self._lock:
            row = self._conn.execute(_SELECT, (response_id, owner, time.time())).fetchone()
        return _row(row) if row is not None else None

    def _delete(self, response_id: str, owner: str) -> bool:
        with self._lock:
            cursor = self._conn.execute(_DELETE, (response_id, owner, time.time()))
        return cursor.rowcount > 0

    async def put(self, item: StoredResponse) -> None:
        await asyncio.to_thread(self._put, item)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        return await asyncio.to_thread(self._get, response_id, owner)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await asyncio.to_thread(self._delete, response_id, owner)

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresResponses:
    """A table in the ledger's PostgreSQL schema, over one connection opened on first use
    (stored responses are one small row per request: a pool would be idle)."""

    def __init__(self, dsn: str, schema: str, retention_s: float) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "storing responses in PostgreSQL needs psycopg",
                hint="pip install 'hybridfast[postgres]'",
            ) from None
        self._psycopg = psycopg
        self.dsn, self.schema, self.retention_s = dsn, schema, retention_s
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._next_sweep = 0.0

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = await self._psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(f'SET search_path TO "{self.schema}"')
            for statement in _PG_SCHEMA:
                await conn.execute(statement)
            self._conn = conn
        return self._conn

    async def put(self, item: StoredResponse) -> None:
        now = time.time()
        async with self._lock:
            conn = await self._connection()
            await conn.execute(
                _pg(_INSERT) + " ON CONFLICT (id) DO UPDATE SET response = EXCLUDED.response, "
                "conversation = EXCLUDED.conversation, expires_at = EXCLUDED.expires_at",
                _values(item, self.retention_s),
            )
            if now >= self._next_sweep:
                self._next_sweep = now + _SWEEP_EVERY_S
                await conn.execute(_pg(_SWEEP), (now,))

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(_pg(_SELECT), (response_id, owner, time.time()))
            row = await cursor.fetchone()
        return (
            _row(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)) if row else None
        )

    async def delete(self, response_id: str, owner: str) -> bool:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(_pg(_DELETE), (response_id, owner, time.time()))
            return bool(cursor.rowcount)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class LazyResponses:
    """The configured store, opened on first use: a server whose ledger database cannot be
    opened reports that once, from the ledger, instead of failing here first."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._store: ResponsesStore | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> ResponsesStore:
        if self._store is None:
            async with self._lock:
                if self._store is None:
                    self._store = await asyncio.to_thread(open_responses_store, self.config)
        return self._store

    async def put(self, item: StoredResponse) -> None:
        await (await self._open()).put(item)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        return await (await self._open()).get(response_id, owner)

    async def delete(self, response_id: str, owner: str) -> bool:
        return await (await self._open()).delete(response_id, owner)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None


def open_responses_store(config: Config) -> ResponsesStore:
    """The store in the ledger's database, as `ledger.backend` says."""
    retention_s = config.responses.retention_days * 86400.0
    ledger = config.ledger
    if ledger.backend == "postgres" and ledger.dsn:
        return PostgresResponses(ledger.dsn, ledger.schema, retention_s)
    if ledger.backend == "sqlite":
        return SqliteResponses(ledger.sibling("responses"), retention_s)
    return MemoryResponses(retention_s)
