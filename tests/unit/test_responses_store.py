"""Stored Responses API answers in the ledger's database: SQLite file, PostgreSQL, memory.
Owners are isolated, retention expires rows, delete is once."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hybridfast.config import Config, LedgerConfig, ResponsesConfig
from hybridfast.responses_store import (
    MemoryResponses,
    PostgresResponses,
    ResponsesStore,
    SqliteResponses,
    StoredResponse,
    open_responses_store,
)

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def item(rid: str, owner: str = "alice", created_at: float | None = None) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        created_at=time.time() if created_at is None else created_at,
        response={"id": rid, "object": "response", "output": []},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": "hi"}],
        conversation=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    )


def _postgres(retention_s: float) -> ResponsesStore:
    return PostgresResponses(DSN, f"responses_{uuid.uuid4().hex[:8]}", retention_s)


Factory = Callable[[float], ResponsesStore]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    opened: list[ResponsesStore] = []

    def make(retention_s: float) -> ResponsesStore:
        if request.param == "memory":
            store: ResponsesStore = MemoryResponses(retention_s)
        elif request.param == "sqlite":
            store = SqliteResponses(str(tmp_path / "ledger.db"), retention_s)
        else:
            store = _postgres(retention_s)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_put_get_owner_and_delete(make_store: Factory) -> None:
    store = make_store(3600.0)
    await store.put(item("resp_a"))
    found = await store.get("resp_a", "alice")
    assert found is not None
    assert found.conversation[1] == {"role": "assistant", "content": "yo"}
    assert found.input_items[0]["id"] == "msg_1"
    assert await store.get("resp_a", "bob") is None  # another key sees nothing
    assert not await store.delete("resp_a", "bob")
    assert await store.delete("resp_a", "alice")
    assert not await store.delete("resp_a", "alice")
    assert await store.get("resp_a", "alice") is None


async def test_retention_expires_rows(make_store: Factory) -> None:
    store = make_store(60.0)
    await store.put(item("resp_old", created_at=time.time() - 120))
    await store.put(item("resp_new"))
    assert await store.get("resp_old", "alice") is None
    assert await store.get("resp_new", "alice") is not None


def test_sqlite_rows_live_beside_the_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    config = Config(
        ledger=LedgerConfig(backend="sqlite", path=str(path)),
        responses=ResponsesConfig(retention_days=1),
    )
    store = open_responses_store(config)
    assert isinstance(store, SqliteResponses)
    assert store.retention_s == 86400.0
    store._put(item("resp_file"))
    # A second connection (another process, say) reads what the first wrote.
    again = SqliteResponses(str(tmp_path / "ledger-responses.db"), 86400.0)
    assert again._get("resp_file", "alice") is not None
    assert isinstance(
        open_responses_store(Config(ledger=LedgerConfig(backend="memory"))), MemoryResponses
    )
