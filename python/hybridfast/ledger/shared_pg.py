"""Budgets counted across instances in PostgreSQL (`ledger.counter: postgres`).

The same contract as the Redis counter (`hybridfast.ledger.shared`): a request's budgets
are checked and held together, all or none; holds are keyed by request id (a retried call
changes nothing twice) and expire when their instance dies. Each call is one transaction
that locks the request's budget rows in key order (so two instances never deadlock on
them), with a retry if PostgreSQL still reports a deadlock or serialization failure.

Slower than Redis (a transaction and a row lock per budget, ~1 ms, and every instance
queues on the global budget's row), but it needs nothing beyond the PostgreSQL that already
holds the ledger, and the counters are as durable as the ledger itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hybridfast import _core
from hybridfast.errors import ConfigError
from hybridfast.ledger import metrics
from hybridfast.ledger.budgets import Budget, BudgetState, refusal
from hybridfast.types import Caller

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS budget_counters (key TEXT PRIMARY KEY, "
    "limit_picos BIGINT NOT NULL, spent BIGINT NOT NULL, reserved BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS budget_holds (request_id TEXT PRIMARY KEY, "
    "amount BIGINT NOT NULL, keys TEXT[] NOT NULL, expires_at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS budget_settled (request_id TEXT PRIMARY KEY, "
    "at TIMESTAMPTZ NOT NULL DEFAULT now())",
)
_RETRIES = 8
_SWEEP_EVERY_S = 2.0


class PostgresBudgets:
    """Shared budget counters in PostgreSQL; each method is one transaction."""

    def __init__(
        self,
        dsn: str,
        schema: str,
        prefix: str,
        budgets: list[Budget],
        *,
        hold_ttl_s: float = 900.0,
        connections: int = 8,
    ) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "ledger.counter postgres needs psycopg", hint="pip install 'hybridfast[postgres]'"
            ) from None
        self._psycopg = psycopg
        self.dsn, self.schema, self.prefix = dsn, schema, prefix
        self.budgets = budgets  # (the setter builds the core's matcher)
        self.hold_ttl_s = hold_ttl_s
        self._size = connections
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._opened = 0
        self._seed_spent: dict[tuple[str, str | None, str, int], int] = {}
        self._next_sweep = 0.0

    # --- connections ---------------------------------------------------------------------

    async def _connect(self) -> Any:
        conn = await self._psycopg.AsyncConnection.connect(self.dsn)
        await conn.execute(f'SET search_path TO "{self.schema}"')
        await conn.commit()
        return conn

    async def _acquire(self) -> Any:
        if self._idle.empty() and self._opened < self._size:
            self._opened += 1
            try:
                return await self._connect()
            except Exception:
                self._opened -= 1
                raise
        return await self._idle.get()

    def _give_back(self, conn: Any) -> None:
        if conn.closed:
            self._opened -= 1
        else:
            self._idle.put_nowait(conn)

    async def _transaction(self, body: Any) -> Any:
        """Runs `body(conn)` in a transaction, retrying on deadlock/serialization failure."""
        errors = self._psycopg.errors
        for attempt in range(_RETRIES):
            conn = await self._acquire()
            try:
                async with conn.transaction():
                    return await body(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.002 * (attempt + 1))
            except self._psycopg.OperationalError as exc:
                await conn.close()
                raise _core.StorageError(f"budget counter: PostgreSQL failed ({exc})") from None
            finally:
                self._give_back(conn)
        raise AssertionError("unreachable")

    # --- the counter -----------------------------------------------------------------------

    @property
    def budgets(self) -> list[Budget]:
        return self._budgets

    @budgets.setter
    def budgets(self, budgets: list[Budget]) -> None:
        self._budgets = list(budgets)
        self._windows = _core.BudgetWindows([b.as_tuple() for b in self._budgets])

    def _key(self, b: Budget, start: int) -> str:
        return f"{self.prefix}:{b.label}:{start}"

    def _chosen(self, caller: Caller, group: str | None) -> list[tuple[Budget, str, int]]:
        """(budget, counter key, spend to seed it with), sorted by key: the lock order.
        Which budgets apply and their windows come from the core, as in the books."""
        out = []
        applicable = self._windows.applicable(caller.key_name, caller.user, caller.team, group)
        for index, start, _end in applicable:
            b = self._budgets[index]
            out.append((b, self._key(b, start), self._seed_spent.get((*b.ident, start), 0)))
        out.sort(key=lambda item: item[1])
        return out

    async def seed(self, books: _core.Ledger) -> None:
        for scope, name, window, _limit, _soft, start, spent, _reserved in books.budgets():
            begin = 0 if window == "total" else int(start)
            self._seed_spent[(scope, name, window, begin)] = int(spent)
        conn = await self._connect()
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(f'SET search_path TO "{self.schema}"')
            for statement in _SCHEMA:
                await conn.execute(statement)
            await conn.commit()
        finally:
            await conn.close()

    async def _lock(self, conn: Any, chosen: list[tuple[Budget, str, int]]) -> dict[str, list[int]]:
        """Creates missing counters, locks them in key order; key -> [limit, spent, reserved]."""
        for b, key, spent in chosen:
            await conn.execute(
                "INSERT INTO budget_counters (key, limit_picos, spent, reserved) "
                "VALUES (%s, %s, %s, 0) ON CONFLICT (key) DO NOTHING",
                (key, b.limit, spent),
            )
        cur = await conn.execute(
            "SELECT key, limit_picos, spent, reserved FROM budget_counters "
            "WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
            ([key for _, key, _ in chosen],),
        )
        return {row[0]: [int(row[1]), int(row[2]), int(row[3])] for row in await cur.fetchall()}

    async def _sweep(self) -> None:
        """Gives back the holds of instances that died (past their deadline)."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + _SWEEP_EVERY_S

        async def body(conn: Any) -> None:
            cur = await conn.execute(
                "DELETE FROM budget_holds WHERE expires_at < now() RETURNING amount, keys"
            )
            back: dict[str, int] = {}
            for amount, keys in await cur.fetchall():
                for key in keys:
                    back[key] = back.get(key, 0) + int(amount)
            for key in sorted(back):
                await conn.execute(
                    "UPDATE budget_counters SET reserved = reserved - %s WHERE key = %s",
                    (back[key], key),
                )
            await conn.execute("DELETE FROM budget_settled WHERE at < now() - interval '1 day'")

        await self._transaction(body)

    async def reserve(
        self, caller: Caller, group: str | None, request_id: str, amount: int
    ) -> None:
        chosen = self._chosen(caller, group)
        if not chosen:
            return
        await self._sweep()

        async def body(conn: Any) -> tuple[Budget, int] | None:
            cur = await conn.execute(
                "SELECT 1 FROM budget_holds WHERE request_id = %s", (request_id,)
            )
            if await cur.fetchone() is not None:
                return None  # the same request again: its hold stands
            rows = await self._lock(conn, chosen)
            for b, key, _ in chosen:
                limit, spent, reserved = rows[key]
                left = limit - spent - reserved
                if amount > 0 and amount > left:
                    return b, max(0, left)
            keys = [key for _, key, _ in chosen]
            await conn.execute(
                "UPDATE budget_counters SET reserved = reserved + %s WHERE key = ANY(%s)",
                (amount, keys),
            )
            await conn.execute(
                "INSERT INTO budget_holds (request_id, amount, keys, expires_at) "
                "VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
                (request_id, amount, keys, self.hold_ttl_s),
            )
            return None

        refused = await self._transaction(body)
        if refused is None:
            return
        budget, remaining = refused
        metrics.REFUSED.labels(budget.label).inc()
        raise refusal(budget.label, remaining)

    async def _drop_hold(self, conn: Any, request_id: str) -> list[str]:
        cur = await conn.execute(
            "SELECT amount, keys FROM budget_holds WHERE request_id = %s FOR UPDATE",
            (request_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return []
        amount, keys = int(row[0]), sorted(row[1])
        await conn.execute(
            "SELECT key FROM budget_counters WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
            (keys,),
        )
        await conn.execute(
            "UPDATE budget_counters SET reserved = reserved - %s WHERE key = ANY(%s)",
            (amount, keys),
        )
        await conn.execute("DELETE FROM budget_holds WHERE request_id = %s", (request_id,))
        return keys

    async def settle(self, caller: Caller, group: str | None, request_id: str, cost: int) -> None:
        chosen = self._chosen(caller, group)

        async def body(conn: Any) -> None:
            cur = await conn.execute(
                "INSERT INTO budget_settled (request_id) VALUES (%s) "
                "ON CONFLICT (request_id) DO NOTHING RETURNING 1",
                (request_id,),
            )
            if await cur.fetchone() is None:
                return  # settled before: booked once
            await self._drop_hold(conn, request_id)
            if chosen:
                await self._lock(conn, chosen)
                await conn.execute(
                    "UPDATE budget_counters SET spent = spent + %s WHERE key = ANY(%s)",
                    (cost, [key for _, key, _ in chosen]),
                )

        await self._transaction(body)

    async def release(self, request_id: str) -> None:
        async def body(conn: Any) -> None:
            await self._drop_hold(conn, request_id)

        await self._transaction(body)

    async def change_limit(
        self, budget: Budget, old_limit: int | None, states: list[BudgetState]
    ) -> None:
        start, _ = _core.budget_window(budget.window)

        async def body(conn: Any) -> None:
            await conn.execute(
                "UPDATE budget_counters SET limit_picos = %s WHERE key = %s",
                (budget.limit, self._key(budget, start)),
            )

        await self._transaction(body)

    async def state(self, budget: Budget, now_ms: int) -> dict[str, int] | None:
        start, _ = _core.budget_window(budget.window, now_ms)

        async def body(conn: Any) -> dict[str, int] | None:
            cur = await conn.execute(
                "SELECT limit_picos, spent, reserved FROM budget_counters WHERE key = %s",
                (self._key(budget, start),),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            limit, spent, reserved = (int(v) for v in row)
            return {
                "limit": limit,
                "spent": spent,
                "reserved": reserved,
                "avail": limit - spent - reserved,
            }

        result: dict[str, int] | None = await self._transaction(body)
        return result

    async def close(self) -> None:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            await conn.close()
        self._opened = 0
