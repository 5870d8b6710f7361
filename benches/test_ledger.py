"""The ledger: record + budget check from Python, durable throughput to SQLite, and a report
over a million records, each against a plain-Python reference measured in the same run.

- record: `reserve` (every budget that applies, all or none) + `settle` (budgets, hourly
  aggregates in 8 dimensions, the journal queue), native vs the same books in Python dicts.
  The p50/p99 of one reserve+settle pair are in extra_info (budget: p99 ≤ 5 µs).
- durable: settled entries written to a SQLite file with synchronous=FULL in group commits of
  up to 4,096, by the core's writer vs Python's sqlite3 `executemany` of the same rows
  (records/s in extra_info; budget ≥ 50k/s).
- report: 1M stored entries, rebuilt from the file and grouped by model and by day (what
  `ledger report` does), vs Python reading the rows and summing them in dicts.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from hybridfast import _core
from hybridfast.types import Caller, LedgerRecord, Usage

USD = _core.PICODOLLARS_PER_USD
T0 = 1_764_000_000_000
BUDGETS = [
    ("global", None, "month", 10**6 * USD, 0.8),
    ("team", "research", "month", 10**6 * USD, 0.8),
    ("key", "alice", "day", 10**6 * USD, 0.8),
]


_RECORD = LedgerRecord(
    request_id="req",
    caller=Caller(key_name="alice", user="alice", team="research"),
    route="smart",
    deployment="smart#0",
    provider="openai",
    model="gpt-4.1",
    usage=Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=600),
    cost=3_612_345,
    latency_ms=41.5,
    ttft_ms=12.0,
    status=200,
    timestamp=T0 / 1000,
)


def _settle(books: _core.Ledger, handle: int, i: int, ts_ms: int = T0) -> tuple[int, list[int]]:
    # The pipeline builds the record anyway; what is measured is handing it to the books.
    _RECORD.request_id = f"req-{i}"
    _RECORD.timestamp = ts_ms / 1000
    return books.settle(handle, _RECORD, "smart")


class PyBooks:
    """The reference: the same books in plain Python (dicts, ints), same checks."""

    def __init__(self, budgets: list[tuple[str, str | None, str, int, float]]) -> None:
        self.budgets = [[scope, name, limit, 0, 0] for scope, name, _, limit, _ in budgets]
        self.holds: dict[int, tuple[int, list[int]]] = {}
        self.next = 0
        self.aggs: dict[tuple[int, str | None, int], list[int]] = defaultdict(lambda: [0] * 8)
        self.pending: list[tuple[Any, ...]] = []

    def reserve(self, key: str, user: str, team: str, group: str, amount: int) -> int:
        values = {"global": None, "key": key, "user": user, "team": team, "model": group}
        applies = []
        for i, (scope, name, limit, spent, reserved) in enumerate(self.budgets):
            if scope == "global" or values[scope] == name:
                if amount > 0 and amount > limit - spent - reserved:
                    raise RuntimeError("budget exceeded")
                applies.append(i)
        for i in applies:
            self.budgets[i][4] += amount
        self.next += 1
        self.holds[self.next] = (amount, applies)
        return self.next

    def settle(self, handle: int, entry: tuple[Any, ...]) -> int:
        amount, applies = self.holds.pop(handle)
        cost, ts = entry[16], entry[0]
        for i in applies:
            self.budgets[i][4] -= amount
            self.budgets[i][3] += cost
        hour = ts // 3_600_000 * 3_600_000
        for dim, name in enumerate((None, entry[2], entry[3], entry[4], entry[8], entry[7],
                                    entry[9], entry[6])):  # fmt: skip
            if dim == 0 or name is not None:
                cell = self.aggs[(dim, name, hour)]
                cell[0] += 1
                cell[1] += entry[11]
                cell[2] += entry[12]
                cell[3] += entry[13]
                cell[7] += cost
        self.pending.append(entry)
        return len(self.pending)


def _percentiles(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }


def test_ledger_record_native(benchmark: Any) -> None:
    books = _core.Ledger(BUDGETS, now_ms=T0)
    reserve, settle = books.reserve, _settle
    counter = iter(range(10**9))

    def one() -> None:
        i = next(counter)
        h = reserve("alice", "alice", "research", "smart", 5 * USD // 1000, T0)
        settle(books, h, i)
        if i % 4096 == 0:
            books.take_pending(1 << 20)  # the writer's job, off the measured path in serve

    benchmark.pedantic(one, rounds=20_000, iterations=1, warmup_rounds=500)
    samples = []
    for _ in range(20_000):
        t = time.perf_counter_ns()
        one()
        samples.append(time.perf_counter_ns() - t)
    benchmark.extra_info.update(_percentiles(samples))
    assert books.budgets()[0][7] == 0  # no hold left behind


def _entry_of(record: LedgerRecord, group: str) -> tuple[Any, ...]:
    """What the Python books read from a record: the same fields the native settle reads,
    so both sides of the ratio start from the record the pipeline hands over."""
    caller, usage = record.caller, record.usage
    return (
        int(record.timestamp * 1000), record.request_id, caller.key_name, caller.user,
        caller.team, ",".join(caller.tags), record.route, record.deployment, group,
        record.provider, record.model, usage.input_tokens, usage.output_tokens,
        usage.cached_input_tokens, usage.cache_write_tokens, usage.reasoning_tokens,
        record.cost, record.saved_cost, record.latency_ms, record.ttft_ms, record.status,
        record.cache, record.fallbacks, usage.estimated, record.parent_id,
    )  # fmt: skip


def test_ledger_record_python(benchmark: Any) -> None:
    books = PyBooks(BUDGETS)
    counter = iter(range(10**9))

    def one() -> None:
        h = books.reserve("alice", "alice", "research", "smart", 5 * USD // 1000)
        _RECORD.request_id = f"req-{next(counter)}"
        books.settle(h, _entry_of(_RECORD, "smart"))
        if len(books.pending) > 4096:
            books.pending.clear()

    benchmark.pedantic(one, rounds=20_000, iterations=1, warmup_rounds=500)
    samples = []
    for _ in range(20_000):
        t = time.perf_counter_ns()
        one()
        samples.append(time.perf_counter_ns() - t)
    benchmark.extra_info.update(_percentiles(samples))


DURABLE_N = 50_000


def test_ledger_durable_native(benchmark: Any, tmp_path: Path) -> None:
    journal = _core.SqliteJournal(str(tmp_path / "native.db"), True)
    books = _core.Ledger()
    rounds = iter(range(10))

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        base = next(rounds) * DURABLE_N
        for i in range(DURABLE_N):
            _settle(books, 0, base + i)
        return (), {}

    def write() -> None:
        while journal.flush(books, 4096):
            pass

    benchmark.pedantic(write, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["records_per_s"] = DURABLE_N / benchmark.stats.stats.median
    assert journal.count() == 3 * DURABLE_N


def test_ledger_durable_python(benchmark: Any, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "python.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(_core.LEDGER_SCHEMA)
    books = _core.Ledger()
    columns = (
        "ts_ms, request_id, key_name, user_name, team, tags, route, deployment, model_group, "
        "provider, model, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
        "reasoning_tokens, cost, saved_cost, latency_ms, ttft_ms, status, cache, fallbacks, "
        "estimated, parent_id"
    )
    insert = f"INSERT INTO ledger_entries ({columns}) VALUES ({', '.join('?' * 25)})"
    rounds = iter(range(10))
    batches: list[list[tuple[Any, ...]]] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        base = next(rounds) * DURABLE_N
        for i in range(DURABLE_N):
            _settle(books, 0, base + i)
        batches[:] = [[row[1:] for row in books.take_pending(4096)]]
        while rows := books.take_pending(4096):
            batches.append([row[1:] for row in rows])
        return (), {}

    def write() -> None:
        for batch in batches:
            db.execute("BEGIN")
            db.executemany(insert, batch)
            db.execute("COMMIT")

    benchmark.pedantic(write, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["records_per_s"] = DURABLE_N / benchmark.stats.stats.median
    assert db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()[0] == 3 * DURABLE_N
    db.close()


REPORT_N = 1_000_000
MODELS = ("smart#0", "smart#1", "fast#0", "local#0")


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A ledger file with 1M entries over 60 days, 4 deployments, 50 keys, 5 teams."""
    path = str(tmp_path_factory.mktemp("ledger") / "million.db")
    journal = _core.SqliteJournal(path, False)
    books = _core.Ledger()
    for i in range(REPORT_N):
        dep = MODELS[i % 4]
        group = dep.split("#")[0]
        record = LedgerRecord(
            request_id=f"r{i}",
            caller=Caller(key_name=f"key{i % 50}", team=f"team{i % 5}"),
            route=group,
            deployment=dep,
            provider="openai",
            model="m",
            usage=Usage(input_tokens=1000 + i % 7, output_tokens=200),
            cost=1_000_000 + i % 1000,
            latency_ms=10.0,
            ttft_ms=None,
            status=200,
            timestamp=(T0 - 16 * 3_600_000 + i * 5_184) / 1000,
        )
        books.settle(0, record, group)
        if i % 65_536 == 0:
            journal.flush(books)
    while journal.flush(books):
        pass
    del journal
    return path


def test_ledger_report_native(benchmark: Any, million: str) -> None:
    def rebuild_and_report() -> tuple[list[Any], list[Any]]:
        books = _core.Ledger()
        _core.SqliteJournal(million, read_only=True).load_into(books)
        return books.report("model"), books.report("total", "day")

    by_model, by_day = benchmark.pedantic(rebuild_and_report, rounds=3, iterations=1)
    assert sum(r[2] for r in by_model) == REPORT_N
    assert len(by_day) == 60
    # Once the books are built (as in `serve`), a report is a scan of hourly cells.
    books = _core.Ledger()
    _core.SqliteJournal(million, read_only=True).load_into(books)
    t = time.perf_counter()
    books.report("model")
    books.report("total", "day")
    benchmark.extra_info["live_report_ms"] = (time.perf_counter() - t) * 1000


def test_ledger_report_python(benchmark: Any, million: str) -> None:
    """The same computation in Python: every row read, summed per hour and combination of
    names (what rebuilding the books needs), then grouped by model and by day."""

    def read_and_sum() -> tuple[dict[str | None, int], dict[int, int]]:
        db = sqlite3.connect(f"file:{million}?mode=ro", uri=True)
        cells: dict[tuple[Any, ...], list[int]] = {}
        for row in db.execute(
            "SELECT ts_ms, key_name, user_name, team, model_group, deployment, provider, route, "
            "status, estimated, cache, input_tokens, output_tokens, cached_input_tokens, "
            "cache_write_tokens, reasoning_tokens, cost, saved_cost FROM ledger_entries"
        ):
            key = (row[0] // 3_600_000, *row[1:8])
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = [0] * 10
            cell[0] += 1
            cell[1] += row[8] >= 400
            cell[2] += row[9]
            cell[3] += row[10] in ("hit", "semantic-hit")
            for i in range(5):
                cell[4 + i] += row[11 + i]
            cell[9] += row[16]
        db.close()
        by_model: dict[str | None, int] = defaultdict(int)
        by_day: dict[int, int] = defaultdict(int)
        for key, cell in cells.items():
            by_model[key[4]] += cell[9]
            by_day[key[0] // 24] += cell[9]
        return by_model, by_day

    by_model, by_day = benchmark.pedantic(read_and_sum, rounds=1, iterations=1)
    assert len(by_model) == 3
    assert len(by_day) == 60


def test_ledger_settle_async_durable(benchmark: Any, tmp_path: Path) -> None:
    """The pipeline's path: 5,000 concurrent `reserve` + `settle` on one event loop, each
    returning only once its entry is committed (SQLite, synchronous=FULL)."""
    import asyncio

    from hybridfast.config import parse_config
    from hybridfast.ledger import open_ledger
    from hybridfast.types import Caller, Deployment, LedgerRecord, Usage

    config = parse_config(
        f"ledger: {{path: {tmp_path / 'async.db'}}}\n"
        "budgets: [{scope: team, name: research, window: month, limit_usd: 1000000}]\n"
    ).config
    caller = Caller(key_name="alice", user="alice", team="research")
    dep = Deployment("smart#0", "smart", "openai", "openai", "gpt-4.1", False, 0.8, _core.Price())
    n = 5_000
    rounds = iter(range(100))

    loop = asyncio.new_event_loop()
    ledger = loop.run_until_complete(open_ledger(config))

    async def one(i: int) -> None:
        r = await ledger.reserve(caller, dep, f"req-{i}", USD // 1000)
        record = LedgerRecord(
            f"req-{i}", caller, "smart", "smart#0", "openai", "gpt-4.1",
            Usage(1200, 300, 600), 3_612_345, 41.5, 12.0, 200,
        )  # fmt: skip
        await ledger.settle(r, record)

    async def batch() -> None:
        base = next(rounds) * n
        await asyncio.gather(*(one(base + i) for i in range(n)))

    try:
        benchmark.pedantic(lambda: loop.run_until_complete(batch()), rounds=3, iterations=1)
    finally:
        loop.run_until_complete(ledger.close())
        loop.close()
    benchmark.extra_info["records_per_s"] = n / benchmark.stats.stats.median
