"""`open_ledger(config)`: what the pipeline gets, over a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast import _core
from hybridfast.config import Config, parse_config
from hybridfast.errors import BudgetExceeded, InvalidRequest
from hybridfast.ledger import budgets as budget_mod
from hybridfast.ledger import metrics, open_ledger
from hybridfast.metrics import REGISTRY
from hybridfast.types import Caller, Deployment, LedgerRecord, Usage

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
ALICE = Caller(key_name="alice-key", user="alice", team="research", tags=("a", "b"))


def config(tmp_path: Path, budgets: str = "", backend: str = "sqlite") -> Config:
    text = f"ledger: {{backend: {backend}, path: {tmp_path / 'ledger.db'}}}\n{budgets}"
    return parse_config(text).config


def record(request_id: str, cost: int, caller: Caller = ALICE, **kw: object) -> LedgerRecord:
    fields: dict[str, object] = {
        "request_id": request_id,
        "caller": caller,
        "route": "smart",
        "deployment": "smart#0",
        "provider": "openai",
        "model": "gpt-4.1",
        "usage": Usage(input_tokens=1000, output_tokens=200, cached_input_tokens=400),
        "cost": cost,
        "latency_ms": 41.5,
        "ttft_ms": 12.0,
        "status": 200,
    }
    fields.update(kw)
    return LedgerRecord(**fields)  # type: ignore[arg-type]


_READ = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute(
    "SELECT request_id, key_name, user_name, team, tags, model_group, cost, "
    "input_tokens, cached_input_tokens, status FROM ledger_entries ORDER BY id"
).fetchall()
print(json.dumps(rows))
"""


def stored(tmp_path: Path) -> list[tuple[object, ...]]:
    """What another process reads from the file (never Python's sqlite3 in this process:
    SQLite's locks are per process, and a second library would drop the ledger's)."""
    out = subprocess.run(
        [sys.executable, "-c", _READ, str(tmp_path / "ledger.db")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [tuple(row) for row in json.loads(out)]


async def test_an_acknowledged_settle_is_already_in_the_file(tmp_path: Path) -> None:
    ledger = await open_ledger(config(tmp_path))
    try:
        r = await ledger.reserve(ALICE, SMART, "req-1", 5 * USD)
        await ledger.settle(r, record("req-1", 1_234_567))
        # Read with a separate connection while the ledger is still open: committed.
        assert stored(tmp_path) == [
            ("req-1", "alice-key", "alice", "research", "a,b", "smart", 1_234_567, 1000, 400, 200)
        ]
    finally:
        await ledger.close()


async def test_concurrent_settles_share_group_commits(tmp_path: Path) -> None:
    ledger = await open_ledger(config(tmp_path))
    try:

        async def one(i: int) -> None:
            r = await ledger.reserve(ALICE, SMART, f"req-{i}", USD)
            await ledger.settle(r, record(f"req-{i}", i))

        await asyncio.gather(*(one(i) for i in range(500)))
        rows = stored(tmp_path)
        assert sorted(int(str(r[0])[4:]) for r in rows) == list(range(500))
        assert sum(int(r[6]) for r in rows) == sum(range(500))  # type: ignore[call-overload]
    finally:
        await ledger.close()


async def test_budgets_refuse_with_the_stable_code_and_survive_a_restart(tmp_path: Path) -> None:
    budgets = (
        "budgets:\n"
        "  - {scope: team, name: research, window: month, limit_usd: 0.01}\n"
        "  - {scope: global, window: total, limit_usd: 50}\n"
    )
    ledger = await open_ledger(config(tmp_path, budgets))
    r = await ledger.reserve(ALICE, SMART, "req-1", USD // 200)  # half a cent
    await ledger.settle(r, record("req-1", USD // 125))  # 0.8 cents
    with pytest.raises(BudgetExceeded) as info:
        await ledger.reserve(ALICE, SMART, "req-2", USD // 200)
    assert info.value.code == "ERR_BUDGET_EXCEEDED"
    assert info.value.status == 429
    assert "team:research/month" in str(info.value)
    assert info.value.headers["x-hybridfast-budget-remaining-usd"] == "0.002"
    assert ledger.remaining(ALICE) == USD // 500
    # Someone outside the team is only held by the global budget.
    assert ledger.remaining(Caller(key_name="bob")) == 50 * USD - USD // 125
    await ledger.close()

    again = await open_ledger(config(tmp_path, budgets))
    try:
        assert again.remaining(ALICE) == USD // 500
        with pytest.raises(BudgetExceeded):
            await again.reserve(ALICE, SMART, "req-3", USD // 200)
        (row,) = again.books.report("team")
        assert (row[0], row[2], row[-2]) == ("research", 1, USD // 125)
    finally:
        await again.close()


async def test_release_gives_the_hold_back(tmp_path: Path) -> None:
    ledger = await open_ledger(
        config(tmp_path, "budgets: [{scope: model, name: smart, window: day, limit_usd: 1}]")
    )
    try:
        r = await ledger.reserve(ALICE, SMART, "req-1", USD)
        assert ledger.remaining(ALICE) is None  # model budgets are not the caller's
        with pytest.raises(BudgetExceeded):
            await ledger.reserve(ALICE, SMART, "req-2", 1)
        await ledger.release(r)
        await ledger.reserve(ALICE, SMART, "req-2", USD)
    finally:
        await ledger.close()


async def test_soft_limit_logs_an_event_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = await open_ledger(
        config(tmp_path, "budgets: [{scope: key, name: alice-key, window: day, limit_usd: 1}]")
    )

    def warnings() -> float:
        value = REGISTRY.get_sample_value(
            "hybridfast_budget_soft_limit_warnings_total", {"budget": "key:alice-key/day"}
        )
        return value or 0.0

    before = warnings()
    try:
        with caplog.at_level(logging.WARNING, logger="hybridfast.ledger"):
            for i, cents in enumerate((50, 35, 5)):
                r = await ledger.reserve(ALICE, SMART, f"req-{i}", cents * USD // 100)
                await ledger.settle(r, record(f"req-{i}", cents * USD // 100))
        events = [rec for rec in caplog.records if getattr(rec, "event", "") == "budget_soft_limit"]
        assert len(events) == 1
        assert "key:alice-key/day" in events[0].getMessage()
        assert warnings() == before + 1
        remaining = REGISTRY.get_sample_value(
            "hybridfast_budget_remaining_usd",
            {"scope": "key", "name": "alice-key", "window": "day"},
        )
        assert remaining == pytest.approx(0.10)
    finally:
        await ledger.close()


async def test_spend_and_token_counters(tmp_path: Path) -> None:
    labels = {"deployment": "smart#0", "key": "alice-key", "team": "research"}
    spend_before = REGISTRY.get_sample_value("hybridfast_spend_usd_total", labels) or 0.0
    ledger = await open_ledger(config(tmp_path, backend="memory"))
    try:
        r = await ledger.reserve(ALICE, SMART, "req-1", USD)
        await ledger.settle(r, record("req-1", USD // 4))
        spend = REGISTRY.get_sample_value("hybridfast_spend_usd_total", labels)
        assert spend == pytest.approx(spend_before + 0.25)
        cached = REGISTRY.get_sample_value(
            "hybridfast_tokens_total", {**labels, "kind": "cached_input"}
        )
        assert cached is not None
        assert cached >= 400
    finally:
        await ledger.close()
    assert not (tmp_path / "ledger.db").exists()  # memory: nothing stored


async def test_admin_budget_changes_are_kept_in_the_store(tmp_path: Path) -> None:
    ledger = await open_ledger(config(tmp_path, "budgets: [{scope: global, limit_usd: 1}]"))
    await ledger.set_budget(
        budget_mod.from_request({"scope": "team", "name": "x", "limit_usd": "2.5"})
    )
    await ledger.set_budget(budget_mod.from_request({"scope": "global", "limit_usd": 3}))
    await ledger.close()
    again = await open_ledger(config(tmp_path, "budgets: [{scope: global, limit_usd: 1}]"))
    try:
        limits = {s.budget.label: s.budget.limit for s in again.budget_states()}
        assert limits == {"global/total": 3 * USD, "team:x/total": 5 * USD // 2}
        assert await again.remove_budget("team", "x", "total")
    finally:
        await again.close()
    third = await open_ledger(config(tmp_path, "budgets: [{scope: global, limit_usd: 1}]"))
    try:
        assert [s.budget.label for s in third.budget_states()] == ["global/total"]
    finally:
        await third.close()


def test_admin_budget_requests_are_checked() -> None:
    ok = budget_mod.from_request({"scope": "user", "name": "u", "window": "day", "limit_usd": 0.1})
    assert ok.limit == USD // 10  # exactly ten cents, not 0.1 as a binary float
    for bad in (
        {"scope": "user", "limit_usd": 1},
        {"scope": "global", "name": "x", "limit_usd": 1},
        {"scope": "team", "name": "t", "window": "week", "limit_usd": 1},
        {"scope": "team", "name": "t", "limit_usd": -1},
        {"scope": "team", "name": "t", "limit_usd": "ten"},
        {"scope": "team", "name": "t", "limit_usd": True},
        {"scope": "team", "name": "t", "limit_usd": 1, "soft_fraction": 2},
        ["not", "an", "object"],
    ):
        with pytest.raises(InvalidRequest):
            budget_mod.from_request(bad)


async def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    ledger = await open_ledger(config(tmp_path))
    seqs = [ledger.record(_reservation(i), record(f"req-{i}", i)) for i in range(100)]
    assert seqs == list(range(1, 101))
    await ledger.close()
    assert len(stored(tmp_path)) == 100


def _reservation(i: int) -> object:
    from hybridfast.types import Reservation

    return Reservation(request_id=f"req-{i}", amount=0)


def test_the_budget_collector_is_registered() -> None:
    assert metrics.BUDGETS in REGISTRY._collector_to_names  # type: ignore[attr-defined]


class _BrokenCounter:
    """A shared counter whose service is down."""

    def __init__(self) -> None:
        self.settles = 0

    async def reserve(self, *args: object) -> None:
        raise ConnectionError("connection refused")

    async def settle(self, *args: object) -> None:
        self.settles += 1
        raise ConnectionError("connection refused")

    async def close(self) -> None:
        pass


async def test_a_down_shared_counter_refuses_holds_but_never_loses_entries(
    tmp_path: Path,
) -> None:
    from hybridfast.ledger import NativeLedger, SqliteStore
    from hybridfast.types import Reservation

    broken = _BrokenCounter()
    store = SqliteStore(str(tmp_path / "ledger.db"))
    ledger = NativeLedger(_core.Ledger(), [], store, broken)  # type: ignore[arg-type]
    try:
        with pytest.raises(_core.StorageError, match="budget counter unavailable"):
            await ledger.reserve(ALICE, SMART, "req-1", USD)
        # Settling still stores the entry; the counter was retried, then given up on.
        await ledger.settle(Reservation("req-2", 0), record("req-2", 7))
        assert broken.settles == 3
        assert [r[0] for r in stored(tmp_path)] == ["req-2"]
    finally:
        await ledger.close()


async def test_an_unreachable_redis_fails_at_start(tmp_path: Path) -> None:
    cfg = parse_config(
        f"ledger: {{path: {tmp_path / 'l.db'}, counter: redis, redis_url: 'redis://127.0.0.1:1/0'}}"
    ).config
    with pytest.raises(_core.StorageError, match="Redis does not answer"):
        await open_ledger(cfg)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["settle", "release"]),
            st.integers(0, 3 * USD // 100),  # worst case
            st.integers(0, 100),  # real cost, as a percentage of the worst case
            st.sampled_from([ALICE, Caller(key_name="bob", team="ops"), Caller()]),
            st.integers(0, 72),  # hours ago
        ),
        max_size=25,
    )
)
def test_a_restart_rebuilds_the_same_books(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, int, int, Caller, int]],
) -> None:
    import time

    path = tmp_path_factory.mktemp("restart")
    budgets = (
        "budgets:\n"
        "  - {scope: team, name: research, window: month, limit_usd: 0.05}\n"
        "  - {scope: global, window: day, limit_usd: 0.08}\n"
        "  - {scope: key, name: bob, window: total, limit_usd: 0.04}\n"
    )
    now = time.time()

    async def run() -> tuple[Any, Any, Any]:
        ledger = await open_ledger(config(path, budgets))
        for i, (op, worst, pct, caller, hours_ago) in enumerate(ops):
            try:
                r = await ledger.reserve(caller, SMART, f"r{i}", worst)
            except BudgetExceeded:
                continue
            if op == "release":
                await ledger.release(r)
                continue
            cost = worst * pct // 100
            await ledger.settle(r, record(f"r{i}", cost, caller, timestamp=now - hours_ago * 3600))
        before = _books(ledger)
        await ledger.close()
        again = await open_ledger(config(path, budgets))
        after = _books(again)
        # Nothing held and nothing spent beyond a limit, before or after.
        for state in again.budget_states():
            assert state.reserved == 0
            assert state.spent <= state.budget.limit
        await again.close()
        return before, after, len(stored(path))

    before, after, rows = asyncio.run(run())
    assert before == after
    assert rows == sum(r[2] for r in after[0])


def _books(ledger: Any) -> tuple[Any, ...]:
    reports = tuple(
        ledger.books.report(by, period)
        for by in ("total", "key", "team", "model")
        for period in (None, "day")
    )
    spent = tuple((s.budget.label, s.spent) for s in ledger.budget_states())
    return (*reports, spent)


@pytest.mark.parametrize(
    ("value", "picos"), [(0.000001, 1_000_000), (1e-12, 1), (2.5, 2_500_000_000_000)]
)
def test_small_budgets_written_as_decimals_are_exact(value: float, picos: int) -> None:
    from hybridfast.ledger.budgets import usd_to_picos

    assert usd_to_picos(value) == picos  # 0.000001 was refused as "1e-06"
