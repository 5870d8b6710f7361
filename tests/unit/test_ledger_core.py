"""The native books from Python: budgets, holds, aggregates, the journal queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast import _core
from hybridfast.types import Caller, LedgerRecord, Usage

USD = _core.PICODOLLARS_PER_USD
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
HOUR = 3_600_000


def settle(
    books: _core.Ledger,
    handle: int,
    cost: int,
    *,
    key: str | None = "k1",
    user: str | None = None,
    team: str | None = None,
    deployment: str = "smart#0",
    ts_ms: int = T0,
    request_id: str = "r",
    status: int = 200,
    cache: str = "miss",
) -> tuple[int, list[int]]:
    group = deployment.rsplit("#", 1)[0]
    record = LedgerRecord(
        request_id=request_id,
        caller=Caller(key_name=key, user=user, team=team),
        route=group,
        deployment=deployment,
        provider="openai",
        model="gpt-4.1",
        usage=Usage(100, 20, 10, 0, 5),
        cost=cost,
        latency_ms=12.5,
        ttft_ms=3.0,
        status=status,
        cache=cache,  # type: ignore[arg-type]
        timestamp=ts_ms / 1000,
    )
    return books.settle(handle, record, group)


def test_reserve_refuses_with_the_budget_and_what_is_left() -> None:
    books = _core.Ledger([("team", "research", "month", 10 * USD, 0.8)], now_ms=T0)
    h = books.reserve("k1", None, "research", "smart", 7 * USD, now_ms=T0)
    with pytest.raises(_core.BudgetExceededError) as info:
        books.reserve("k1", None, "research", "smart", 4 * USD, now_ms=T0)
    assert info.value.code == "ERR_BUDGET_EXCEEDED"
    assert info.value.scope == "team:research/month"
    assert info.value.remaining == 3 * USD
    # Other teams are not limited; the team's remaining reflects the hold.
    assert books.remaining("k1", None, "other", now_ms=T0) is None
    assert books.remaining("k1", None, "research", now_ms=T0) == 3 * USD
    settle(books, h, 2 * USD, team="research")
    assert books.remaining("k1", None, "research", now_ms=T0) == 8 * USD


def test_settle_and_release_are_once_only() -> None:
    books = _core.Ledger([("global", None, "total", USD, 0.8)])
    h = books.reserve(None, None, None, None, USD // 2)
    settle(books, h, 1)
    with pytest.raises(_core.NotFoundError):
        settle(books, h, 1)
    assert books.release(h) is False
    h2 = books.reserve(None, None, None, None, USD // 2)
    assert books.release(h2) is True
    assert books.release(h2) is False
    (_, _, _, _, _, _, spent, reserved) = books.budgets()[0]
    assert (spent, reserved) == (1, 0)


def test_bad_budgets_and_amounts_are_refused() -> None:
    with pytest.raises(_core.InvalidArgumentError):
        _core.Ledger([("planet", "x", "day", 1, 0.8)])
    with pytest.raises(_core.InvalidArgumentError):
        _core.Ledger([("team", None, "day", 1, 0.8)])
    with pytest.raises(_core.InvalidArgumentError):
        _core.Ledger([("global", None, "fortnight", 1, 0.8)])
    books = _core.Ledger()
    with pytest.raises(_core.InvalidArgumentError):
        books.reserve(None, None, None, None, -1)
    with pytest.raises(_core.InvalidArgumentError):
        books.report("colour")


def test_soft_limit_is_reported_once_per_window() -> None:
    books = _core.Ledger([("key", "k1", "hour", 10 * USD, 0.5)], now_ms=T0)
    assert settle(books, 0, 4 * USD)[1] == []
    assert settle(books, 0, 2 * USD)[1] == [0]
    assert settle(books, 0, 2 * USD)[1] == []
    # The next hour starts a new window, and a new warning.
    assert settle(books, 0, 6 * USD, ts_ms=T0 + HOUR)[1] == [0]


def test_report_by_dimension_and_period_and_the_journal_queue() -> None:
    # (Books made "now" keep hourly detail for recent days only; these entries are old.)
    books = _core.Ledger(now_ms=T0 + 32 * HOUR)
    settle(books, 0, 3, team="a", request_id="r1")
    settle(books, 0, 4, team="b", deployment="fast#0", ts_ms=T0 + 30 * HOUR, request_id="r2")
    settle(books, 0, 5, team="a", ts_ms=T0 + 31 * HOUR, request_id="r3", cache="hit")
    rows = books.report("team")
    assert [(r[0], r[2], r[-2]) for r in rows] == [("a", 2, 8), ("b", 1, 4)]
    by_model = {r[0]: r[-2] for r in books.report("model")}
    assert by_model == {"smart": 8, "fast": 4}
    days = books.report("total", "day")
    assert [(r[1], r[-2]) for r in days] == [(T0 - 16 * HOUR, 3), (T0 + 8 * HOUR, 9)]
    (total,) = books.report()
    # requests, errors, estimated, cache hits, tokens..., cost
    assert total[2:] == (3, 0, 0, 1, 300, 60, 30, 0, 15, 12, 0)
    assert books.report("total", since_ms=T0 + 31 * HOUR)[0][-2] == 5
    # Eight days on, those hours are folded into days; day totals do not change.
    settle(books, 0, 1, ts_ms=T0 + 10 * 24 * HOUR, request_id="r4")
    hours = books.report("total", "hour", until_ms=T0 + 9 * 24 * HOUR)
    assert [(r[1], r[-2]) for r in hours] == [(T0 - 16 * HOUR, 3), (T0 + 8 * HOUR, 9)]
    pending = books.take_pending()
    assert [p[0] for p in pending] == [1, 2, 3, 4]  # seqs in order
    assert pending[0][1:4] == (T0, "r1", "k1")
    assert books.pending_len() == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**13),
            st.sampled_from([None, "a", "b"]),
            st.sampled_from([None, "k1", "k2"]),
            st.sampled_from(["smart#0", "smart#1", "fast#0"]),
            st.integers(0, 24 * 90),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_aggregates_equal_the_sum_of_settled_costs_at_every_level(
    items: list[tuple[int, str | None, str | None, str, int]],
) -> None:
    books = _core.Ledger()
    for i, (cost, team, key, deployment, hour) in enumerate(items):
        settle(
            books, 0, cost, team=team, key=key, deployment=deployment,
            ts_ms=T0 + hour * HOUR, request_id=f"r{i}",
        )  # fmt: skip
    total = sum(i[0] for i in items)
    for by in ("total", "model", "deployment", "provider", "route"):
        for period in (None, "hour", "day", "month"):
            rows = books.report(by, period)
            assert sum(r[-2] for r in rows) == total
            assert sum(r[2] for r in rows) == len(items)
    for by, index in (("team", 1), ("key", 2)):
        expected: dict[str | None, int] = {}
        for item in items:
            if item[index] is not None:
                expected[item[index]] = expected.get(item[index], 0) + item[0]
        assert {r[0]: r[-2] for r in books.report(by)} == expected


def test_concurrent_reserve_and_settle_never_overspend() -> None:
    limit = 50 * USD
    books = _core.Ledger([("global", None, "total", limit, 0.8), ("team", "a", "day", limit, 0.8)])
    refused = threading.Event()

    def work(seed: int) -> None:
        for i in range(3000):
            worst = (i * 7 + seed) % 13 * USD // 10 + 1
            try:
                h = books.reserve("k1", None, "a", "smart", worst)
            except _core.BudgetExceededError:
                refused.set()
                continue
            if (i + seed) % 4 == 0:
                books.release(h)
            else:
                settle(books, h, worst - i % 2, team="a")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert refused.is_set()  # the limit was reached, so the check was exercised
    for _, _, _, lim, _, _, spent, reserved in books.budgets():
        assert reserved == 0
        assert spent <= lim
    assert books.report()[0][-2] == books.budgets()[0][6]


def test_sqlite_journal_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    path = str(tmp_path / "ledger.db")  # type: ignore[operator]
    books = _core.Ledger([("global", None, "month", 100 * USD, 0.8)])
    journal = _core.SqliteJournal(path)
    assert journal.flush(books) == 0
    for i in range(10):
        settle(books, 0, USD + i, request_id=f"r{i}", ts_ms=_now_ms())
    assert journal.flush(books) == 10
    assert journal.count() == 10
    rebuilt = _core.Ledger([("global", None, "month", 100 * USD, 0.8)])
    assert _core.SqliteJournal(path, read_only=True).load_into(rebuilt) == 10
    assert rebuilt.report() == books.report()
    assert rebuilt.budgets()[0][6] == 10 * USD + 45


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@pytest.mark.parametrize(
    ("field", "value"),
    [("input_tokens", -1), ("output_tokens", 2.5), ("cached_input_tokens", "10")],
)
def test_a_record_with_bad_usage_is_refused_and_books_nothing(field: str, value: object) -> None:
    # An upstream's usage can be anything; the books must refuse it with the core's own
    # error (a code the gateway maps), not a TypeError, and keep the hold to release.
    books = _core.Ledger([("global", None, "total", USD, 0.8)])
    h = books.reserve("k1", None, None, "smart", 1000)
    record = LedgerRecord(
        request_id="bad",
        caller=Caller(key_name="k1"),
        route="smart",
        deployment="smart#0",
        provider="openai",
        model="gpt-4.1",
        usage=Usage(),
        cost=5,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
    )
    setattr(record.usage, field, value)
    with pytest.raises(_core.InvalidArgumentError) as info:
        books.settle(h, record, "smart")
    assert info.value.code == "ERR_INVALID_REQUEST"
    assert field in str(info.value)
    assert books.pending_len() == 0
    (*_, spent, reserved) = books.budgets()[0]
    assert (spent, reserved) == (0, 1000)
    assert books.release(h) is True


def test_every_core_error_carries_its_code_even_when_raised_from_python() -> None:
    codes = {
        _core.InvalidArgumentError: "ERR_INVALID_REQUEST",
        _core.NotFoundError: "ERR_NOT_FOUND",
        _core.BudgetExceededError: "ERR_BUDGET_EXCEEDED",
        _core.NoCandidatesError: "ERR_NO_CANDIDATES",
        _core.DimensionError: "ERR_DIMENSION",
        _core.StorageError: "ERR_STORAGE",
        _core.OverflowError: "ERR_OVERFLOW",
    }
    for kind, code in codes.items():
        assert kind.code == code
        assert kind("raised by Python").code == code
    assert _core.HybridfastError("x").code == "ERR_INTERNAL"
    books = _core.Ledger([("key", "k1", "day", 10, 0.8)], now_ms=T0)
    with pytest.raises(_core.BudgetExceededError) as info:
        books.reserve("k1", None, None, None, 11, now_ms=T0)
    assert info.value.details == {"scope": "key:k1/day", "remaining": 10}
    index = _core.VectorIndex(4)
    with pytest.raises(_core.DimensionError) as dim:
        index.search_one(0, np.zeros(3, dtype=np.float32))
    assert dim.value.details == {"expected": 4, "got": 3}


def test_budget_windows_choose_what_the_books_hold() -> None:
    budgets = [
        ("global", None, "total", 100 * USD, 0.8),
        ("team", "a", "day", 10 * USD, 0.8),
        ("team", "b", "day", 10 * USD, 0.8),
        ("key", "k1", "month", 10 * USD, 0.8),
        ("model", "smart", "hour", 10 * USD, 0.8),
    ]
    windows = _core.BudgetWindows(budgets)
    chosen = windows.applicable("k1", None, "a", "smart", now_ms=T0)
    assert [index for index, _, _ in chosen] == [0, 1, 3, 4]
    day = T0 // (24 * HOUR) * (24 * HOUR)
    assert chosen[0][1:] == (0, 0)  # a total window never changes its counter key
    assert chosen[1][1:] == (day, day + 24 * HOUR) == _core.budget_window("day", T0)
    assert chosen[2][1:] == _core.budget_window("month", T0)
    assert chosen[3][1:] == (T0, T0 + HOUR)
    books = _core.Ledger(budgets, now_ms=T0)
    books.reserve("k1", None, "a", "smart", USD, now_ms=T0)
    held = [i for i, b in enumerate(books.budgets(now_ms=T0)) if b[7] > 0]
    assert held == [index for index, _, _ in chosen]
    with pytest.raises(_core.InvalidArgumentError):
        _core.budget_window("fortnight")
