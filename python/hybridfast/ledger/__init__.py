"""The cost ledger and budgets.

`await open_ledger(config)` is what the pipeline calls. It builds the native books with the
configured budgets (plus those changed through the admin API, kept in the store), rebuilds
aggregates and budget state from the store, and starts the store's background writer.

- `ledger.backend: sqlite` (default): a SQLite file in WAL mode, group commit.
- `ledger.backend: postgres`: PostgreSQL (psycopg), for several instances sharing a ledger.
- `ledger.backend: memory`: nothing stored (tests, throwaway runs).
- `ledger.counter: redis`: budgets counted across instances in Redis, atomically (one Lua
  script holds, checks and books every budget of a request) and idempotently (by request
  id). See `hybridfast.ledger.shared`.
- `ledger.counter: postgres`: the same in PostgreSQL (`ledger.dsn`), one transaction per
  call with the budget rows locked in key order. See `hybridfast.ledger.shared_pg`.
"""

from __future__ import annotations

import asyncio

from hybridfast import _core, pricing
from hybridfast.config import Config, LedgerConfig
from hybridfast.errors import ConfigError
from hybridfast.ledger.budgets import Budget, BudgetState, SharedCounter, from_config, model_group
from hybridfast.ledger.service import NativeLedger
from hybridfast.ledger.shared import RedisBudgets
from hybridfast.ledger.shared_pg import PostgresBudgets
from hybridfast.ledger.stores import PostgresStore, SqliteStore, Store, open_store

__all__ = [
    "Budget",
    "BudgetState",
    "NativeLedger",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "load_books",
    "model_group",
    "open_ledger",
    "open_store",
]


def merged_budgets(config: Config, store: Store | None) -> list[Budget]:
    """The config's budgets, then the admin API's changes kept in the store."""
    budgets = {b.ident: b for b in from_config(config.budgets)}
    if store is not None:
        for budget, deleted in store.budget_overrides():
            if deleted:
                budgets.pop(budget.ident, None)
            else:
                budgets[budget.ident] = budget
    return list(budgets.values())


def load_books(config: Config, store: Store | None) -> tuple[_core.Ledger, list[Budget]]:
    """Native books with the budgets, rebuilt from the store (blocking)."""
    budgets = merged_budgets(config, store)
    books = _core.Ledger([b.as_tuple() for b in budgets])
    if store is not None:
        store.rebuild(books)
    return books, budgets


async def open_ledger(config: Config) -> NativeLedger:
    lc: LedgerConfig = config.ledger
    pricing.configure(lc.prices_file)
    if lc.counter == "postgres" and not lc.dsn:
        raise ConfigError(
            "ledger.counter: postgres needs ledger.dsn",
            hint="set ledger.dsn to the PostgreSQL that holds the shared counters",
        )
    store = await asyncio.to_thread(open_store, lc)
    books, budgets = await asyncio.to_thread(load_books, config, store)
    shared: SharedCounter | None = None
    if lc.counter == "redis":
        shared = RedisBudgets(lc.redis_url, lc.redis_prefix, budgets, hold_ttl_s=lc.hold_ttl_s)
    elif lc.counter == "postgres":
        assert lc.dsn is not None
        shared = PostgresBudgets(
            lc.dsn, lc.schema, lc.redis_prefix, budgets, hold_ttl_s=lc.hold_ttl_s
        )
    if shared is not None:
        try:
            await shared.seed(books)
        except BaseException:
            await shared.close()
            raise
    return NativeLedger(books, budgets, store, shared, poll_s=lc.flush_interval_ms / 1000)
