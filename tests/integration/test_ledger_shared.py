"""The ledger on the real PostgreSQL and Redis at 127.0.0.1 (a fresh schema and key prefix
per test, removed after)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from hybridfast import _core
from hybridfast.config import Config, parse_config
from hybridfast.errors import BudgetExceeded
from hybridfast.ledger import budgets as budget_mod
from hybridfast.ledger import open_ledger
from hybridfast.ledger.shared import RedisBudgets
from hybridfast.ledger.shared_pg import PostgresBudgets
from hybridfast.types import Caller, Reservation, Usage
from tests.unit.test_ledger_service import ALICE, SMART, record

USD = _core.PICODOLLARS_PER_USD
DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def schema() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    name = f"hf_ledger_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    aioredis = pytest.importorskip("redis.asyncio")
    name = f"hf-test:{uuid.uuid4().hex[:10]}"
    yield name
    client = aioredis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Counter = RedisBudgets | PostgresBudgets


@pytest.fixture(params=["redis", "postgres"])
def counters(request: pytest.FixtureRequest, prefix: str) -> Iterator[Callable[..., Counter]]:
    """Builds shared counters of one kind (instances of one gateway each), all on the same
    Redis prefix or PostgreSQL schema."""
    if request.param == "redis":
        request.applymarker(pytest.mark.redis)

        def make(budgets: list[budget_mod.Budget], hold_ttl_s: float = 900.0) -> Counter:
            return RedisBudgets(REDIS, prefix, budgets, hold_ttl_s=hold_ttl_s)

        yield make
        return
    request.applymarker(pytest.mark.postgres)
    schema = request.getfixturevalue("schema")

    def make_pg(budgets: list[budget_mod.Budget], hold_ttl_s: float = 900.0) -> Counter:
        return PostgresBudgets(DSN, schema, prefix, budgets, hold_ttl_s=hold_ttl_s)

    yield make_pg


def pg_config(schema: str, budgets: str = "", counter: str = "local", prefix: str = "") -> Config:
    text = (
        f"ledger: {{backend: postgres, dsn: '{DSN}', schema: {schema}, counter: {counter}, "
        f"redis_prefix: '{prefix or 'unused'}'}}\n{budgets}"
    )
    return parse_config(text).config


@pytest.mark.postgres
async def test_postgres_store_acknowledges_rebuilds_and_exports(schema: str) -> None:
    import psycopg

    budgets = "budgets: [{scope: team, name: research, window: day, limit_usd: 1}]"
    ledger = await open_ledger(pg_config(schema, budgets))
    try:

        async def one(i: int) -> None:
            r = await ledger.reserve(ALICE, SMART, f"req-{i}", USD // 100)
            usage = Usage(input_tokens=100, output_tokens=20, estimated=i % 2 == 0)
            await ledger.settle(r, record(f"req-{i}", USD // 200, usage=usage))

        await asyncio.gather(*(one(i) for i in range(60)))
        with psycopg.connect(DSN) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            count, total = conn.execute("SELECT COUNT(*), SUM(cost) FROM ledger_entries").fetchone()  # type: ignore[misc]
        assert (count, int(total)) == (60, 60 * USD // 200)
        await ledger.set_budget(
            budget_mod.from_request({"scope": "global", "window": "month", "limit_usd": 5})
        )
    finally:
        await ledger.close()

    again = await open_ledger(pg_config(schema, budgets))
    try:
        assert again.remaining(ALICE) == USD - 60 * USD // 200
        assert {b.label for b in again.budgets()} == {"team:research/day", "global/month"}
        (row,) = again.books.report("key")
        assert (row[0], row[2], row[-2]) == ("alice-key", 60, 60 * USD // 200)
        exported = list(again.store.export(None, None))  # type: ignore[union-attr]
        assert {e["request_id"] for e in exported} == {f"req-{i}" for i in range(60)}
        assert sum(e["cost"] for e in exported) == 60 * USD // 200
        assert sum(e["estimated"] for e in exported) == 30
    finally:
        await again.close()


async def test_holds_are_atomic_idempotent_and_exact(counters: Callable[..., Counter]) -> None:
    big = 20_000 * USD  # beyond 2**53 picodollars: Lua doubles would round it
    shared = counters(
        [
            budget_mod.Budget("global", None, "total", big),
            budget_mod.Budget("team", "research", "month", USD),
        ]
    )
    await shared.seed(_core.Ledger())
    try:
        await shared.reserve(ALICE, "smart", "r1", USD - 1)
        await shared.reserve(ALICE, "smart", "r1", USD - 1)  # the same request: one hold
        with pytest.raises(BudgetExceeded) as info:
            await shared.reserve(ALICE, "smart", "r2", 2)
        assert "team:research/month" in str(info.value)
        assert info.value.headers["x-hybridfast-budget-remaining-usd"] == "0.000000000001"
        # The refusal held nothing in the global budget either.
        state = await shared.state(shared.budgets[0], 0)
        assert state == {"limit": big, "spent": 0, "reserved": USD - 1, "avail": big - USD + 1}
        # Someone outside the team only meets the global budget.
        await shared.reserve(Caller(key_name="bob"), "smart", "r3", 7)
        await shared.release("r3")
        await shared.release("r3")  # twice: nothing more
        await shared.settle(ALICE, "smart", "r1", 3)
        await shared.settle(ALICE, "smart", "r1", 3)  # twice: booked once
        state = await shared.state(shared.budgets[0], 0)
        assert state == {"limit": big, "spent": 3, "reserved": 0, "avail": big - 3}
    finally:
        await shared.close()


async def test_a_dead_instances_holds_expire(counters: Callable[..., Counter]) -> None:
    budget = budget_mod.Budget("global", None, "total", USD)
    # Long enough that a loaded machine still refuses before the hold expires.
    dead = counters([budget], hold_ttl_s=1.0)
    alive = counters([budget])
    await dead.seed(_core.Ledger())
    await alive.seed(_core.Ledger())
    try:
        await dead.reserve(Caller(), "smart", "lost", USD)
        with pytest.raises(BudgetExceeded):
            await alive.reserve(Caller(), "smart", "r1", 1)
        await asyncio.sleep(1.1)
        if isinstance(alive, PostgresBudgets):
            alive._next_sweep = 0.0  # sweeps run every few seconds; don't wait in a test
        # The next call sweeps the expired hold and gives it back.
        await alive.reserve(Caller(), "smart", "r1", USD)
    finally:
        await dead.close()
        await alive.close()


async def test_concurrent_instances_never_overspend(counters: Callable[..., Counter]) -> None:
    budget = budget_mod.Budget("global", None, "total", USD)
    instances = [counters([budget]) for _ in range(3)]
    for shared in instances:
        await shared.seed(_core.Ledger())
    spent = 0

    async def request(shared: Counter, i: int) -> None:
        nonlocal spent
        worst = (i % 7 + 1) * USD // 50
        try:
            await shared.reserve(Caller(), None, f"r{i}", worst)
        except BudgetExceeded:
            return
        if i % 5 == 0:
            await shared.release(f"r{i}")
            return
        cost = worst - i % 3
        await shared.settle(Caller(), None, f"r{i}", cost)
        spent += cost

    try:
        await asyncio.gather(*(request(instances[i % 3], i) for i in range(300)))
        state: Any = await instances[0].state(budget, 0)
        assert state["spent"] == spent
        assert spent <= USD
        assert spent > USD // 2  # the budget was used, not refused wholesale
        assert state["reserved"] == 0
        assert state["avail"] == USD - spent
    finally:
        for shared in instances:
            await shared.close()


@pytest.mark.postgres
@pytest.mark.redis
async def test_counter_is_seeded_from_the_store_and_limits_change_live(
    schema: str, prefix: str
) -> None:
    budgets = "budgets: [{scope: global, window: day, limit_usd: 1}]"
    first = await open_ledger(pg_config(schema, budgets))
    try:
        await first.settle(Reservation("old", 0), record("old", USD // 4))
    finally:
        await first.close()
    # A new counter starts from what the store holds for the window ($0.25 spent).
    ledger = await open_ledger(pg_config(schema, budgets, "redis", prefix))
    try:
        with pytest.raises(BudgetExceeded):
            await ledger.reserve(ALICE, SMART, "r1", USD)
        await ledger.set_budget(
            budget_mod.from_request({"scope": "global", "window": "day", "limit_usd": 2})
        )
        r = await ledger.reserve(ALICE, SMART, "r1", USD)
        await ledger.settle(r, record("r1", USD // 2))
        assert ledger.shared is not None
        state = await ledger.shared.state(ledger.budgets()[0], _now_ms())
        assert state == {"limit": 2 * USD, "spent": 3 * USD // 4, "reserved": 0,
                         "avail": 5 * USD // 4}  # fmt: skip
    finally:
        await ledger.close()


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
