"""The ledger the pipeline talks to (`types.Ledger`), over the native books.

- `reserve` holds the worst case against every budget that applies (key, user, team, the
  deployment's model group, global) in the core, all or none, in about a microsecond; with
  a shared counter (`ledger.counter: redis`) the hold is taken there instead, atomically
  across instances.
- `settle` books the real cost in the core (budgets, aggregates) and returns once the
  store has committed the entry: an acknowledged settle is durable. A SQLite store without
  fsync (`synchronous: normal`, the default) commits on the event loop, once per loop tick
  for every entry settled in it (a write-ahead-log append costs tens of microseconds); a
  store whose commits wait for an fsync or a server (`full`, PostgreSQL) has a background
  writer thread instead, so the loop never waits for the disk or the network.
- `release` gives a hold back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from hybridfast import _core
from hybridfast._core import format_usd
from hybridfast.errors import BudgetExceeded, InvalidRequest
from hybridfast.ledger import metrics
from hybridfast.ledger.budgets import (
    Budget,
    BudgetState,
    SharedCounter,
    model_group,
    refusal,
)
from hybridfast.ledger.stores import Checkpointer, SqliteStore, Store, Writer
from hybridfast.types import Caller, Deployment, LedgerRecord, Picodollars, Reservation

__all__ = ["NativeLedger", "model_group"]

log = logging.getLogger("hybridfast.ledger")


class NativeLedger:
    """`types.Ledger` over the native books, a store and optionally a shared counter."""

    def __init__(
        self,
        books: _core.Ledger,
        budgets: list[Budget],
        store: Store | None = None,
        shared: SharedCounter | None = None,
        *,
        poll_s: float = 0.005,
    ) -> None:
        self.books = books
        self.store = store
        self.shared = shared
        self._budgets = {b.ident: b for b in budgets}
        self._loop = asyncio.get_running_loop()
        self._durable = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._writer: Writer | None = None
        self._closed = False
        # Committing on the loop saves, per request at low concurrency, the hand-off to the
        # writer thread and back (a futex wake, a GIL switch, a self-pipe write and one more
        # event-loop wake-up): ~0.1 ms of CPU and latency at 1 concurrent (benches/
        # test_gateway.py). Under load a tick's settles still share one commit.
        self._commit_on_loop = isinstance(store, SqliteStore) and not store.synchronous_full
        self._commit_scheduled = False
        self._retry_s = 0.05
        self._checkpointer: Checkpointer | None = None
        if isinstance(store, SqliteStore) and self._commit_on_loop:
            # The loop's commits stay microseconds: checkpoints run on their own thread.
            self._checkpointer = Checkpointer(store)
            self._checkpointer.start()
        elif store is not None:
            self._writer = Writer(store, books, self._durable_from_thread, poll_s=poll_s)
            self._writer.start()
        metrics.BUDGETS.ledgers.add(self)

    # --- the pipeline's protocol -------------------------------------------------------

    async def reserve(
        self, caller: Caller, deployment: Deployment, request_id: str, worst_case: Picodollars
    ) -> Reservation:
        if self.shared is not None:
            try:
                await self.shared.reserve(caller, deployment.name, request_id, worst_case)
            except (BudgetExceeded, _core.HybridfastError):
                raise
            except Exception as exc:
                # Fail closed: without the shared counter nobody can say the budget holds.
                raise _core.StorageError(f"budget counter unavailable ({exc})") from None
            return Reservation(request_id=request_id, amount=worst_case, handle=0)
        try:
            handle = self.books.reserve(
                caller.key_name, caller.user, caller.team, deployment.name, worst_case
            )
        except _core.BudgetExceededError as exc:
            # The binding names the budget and what is left; nothing is re-derived here.
            scope = str(exc.details.get("scope", "budget"))
            metrics.REFUSED.labels(scope).inc()
            raise refusal(scope, int(exc.details.get("remaining", 0))) from None
        except _core.InvalidArgumentError as exc:
            raise InvalidRequest(str(exc)) from None
        return Reservation(request_id=request_id, amount=worst_case, handle=handle)

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        seq = self.record(reservation, record)
        try:
            if self.shared is not None:
                await self._settle_shared(reservation, record)
        finally:
            await self.wait_durable(seq)

    async def _settle_shared(self, reservation: Reservation, record: LedgerRecord) -> None:
        # The entry is in the store whatever happens here; the shared counter is retried (a
        # settle is idempotent by request id) and, failing that, its hold expires in time.
        assert self.shared is not None
        group = model_group(record.deployment)
        for attempt in range(3):
            try:
                await self.shared.settle(record.caller, group, reservation.request_id, record.cost)
                return
            except Exception as exc:
                if attempt == 2:
                    metrics.WRITE_ERRORS.inc()
                    log.error(
                        "budget counter: could not book request %s (%s); its hold expires "
                        "in ledger.hold_ttl_s and the shared budget misses this spend",
                        reservation.request_id,
                        exc,
                    )
                    return
                await asyncio.sleep(0.05 * (attempt + 1))

    async def release(self, reservation: Reservation) -> None:
        if self.shared is not None:
            await self.shared.release(reservation.request_id)
        elif isinstance(reservation.handle, int) and reservation.handle:
            self.books.release(reservation.handle)

    def remaining(self, caller: Caller) -> Picodollars | None:
        left = self.books.remaining(caller.key_name, caller.user, caller.team)
        return None if left is None else int(left)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        elif self._commit_on_loop:
            await asyncio.to_thread(self._commit_rest)
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
        if self.shared is not None:
            await self.shared.close()
        if self.store is not None:
            self.store.close()
        metrics.BUDGETS.ledgers.discard(self)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(
                    _core.StorageError("the ledger closed before this entry was stored")
                )
        self._waiters.clear()

    # --- the parts -----------------------------------------------------------------------

    def record(self, reservation: Reservation, record: LedgerRecord) -> int:
        """Books `record` in the core and queues it for the store; returns its sequence
        number (synchronous: for callers that wait on durability themselves)."""
        handle = reservation.handle if isinstance(reservation.handle, int) else 0
        seq, crossed = self.books.settle(handle, record, model_group(record.deployment))
        if self._commit_on_loop and not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit)
        metrics.count_settled(record)
        if crossed:
            self._soft_limit(crossed)
        return int(seq)

    async def wait_durable(self, seq: int) -> None:
        """Returns once the entry numbered `seq` is committed to the store."""
        if self.store is None or seq <= self._durable:
            return
        if self._closed:
            raise _core.StorageError("the ledger is closed")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((seq, fut))
        await fut

    def _commit(self) -> None:
        """Commits what was settled since the last commit (on the loop; no fsync)."""
        self._commit_scheduled = False
        if self._closed:  # close() writes the rest: one writer at a time keeps seqs in order
            return
        assert self.store is not None
        try:
            seq = self.store.write_step(self.books, 0.0)
        except _core.StorageError as exc:
            # The entries went back to the queue; their settles keep waiting.
            metrics.WRITE_ERRORS.inc()
            log.error("ledger: %s; retrying in %.2fs", exc, self._retry_s)
            self._commit_scheduled = True
            self._loop.call_later(self._retry_s, self._commit)
            self._retry_s = min(self._retry_s * 2, 2.0)
            return
        self._retry_s = 0.05
        if seq:
            self._durable_up_to(seq)
        if self.books.pending_len() and not self._commit_scheduled:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit)

    def _commit_rest(self, timeout_s: float = 10.0) -> None:
        """Writes what is still queued at close (blocking: call it off the loop)."""
        assert self.store is not None
        give_up = time.monotonic() + timeout_s
        while self.books.pending_len():
            try:
                seq = self.store.write_step(self.books, 0.0)
            except _core.StorageError as exc:
                metrics.WRITE_ERRORS.inc()
                if time.monotonic() > give_up:
                    log.error(
                        "ledger: %d entries could not be stored (%s)", self.books.pending_len(), exc
                    )
                    return
                time.sleep(0.05)
                continue
            if seq:
                self._loop.call_soon_threadsafe(self._durable_up_to, seq)

    def _durable_from_thread(self, seq: int) -> None:
        self._loop.call_soon_threadsafe(self._durable_up_to, seq)

    def _durable_up_to(self, seq: int) -> None:
        self._durable = max(self._durable, seq)
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _soft_limit(self, crossed: list[int]) -> None:
        states = self.budget_states()
        for index in crossed:
            if index < len(states):
                state = states[index]
                label = state.budget.label
                metrics.SOFT_LIMIT.labels(label).inc()
                log.warning(
                    "budget soft limit reached: %s spent $%s of $%s (%.0f%%)",
                    label,
                    format_usd(state.spent),
                    format_usd(state.budget.limit),
                    100 * state.budget.soft_fraction,
                    extra={"event": "budget_soft_limit", "budget": label},
                )

    # --- budgets ------------------------------------------------------------------------

    def budget_states(self, now_ms: int | None = None) -> list[BudgetState]:
        out = []
        for scope, name, window, limit, soft, start, spent, reserved in self.books.budgets(now_ms):
            budget = Budget(scope, name, window, limit, soft)
            out.append(BudgetState(budget, start, int(spent), int(reserved)))
        return out

    async def set_budget(self, budget: Budget) -> None:
        """Adds or changes a budget, here, in the store (so it outlives a restart) and in
        the shared counter."""
        old = self._budgets.get(budget.ident)
        self.books.set_budget(
            budget.scope, budget.name, budget.window, budget.limit, budget.soft_fraction
        )
        self._budgets[budget.ident] = budget
        if self.store is not None:
            await asyncio.to_thread(self.store.save_budget, budget)
        if self.shared is not None:
            self.shared.budgets = list(self._budgets.values())
            await self.shared.change_limit(budget, old.limit if old else None, self.budget_states())

    async def remove_budget(self, scope: str, name: str | None, window: str) -> bool:
        budget = self._budgets.pop((scope, name, window), None)
        removed = self.books.remove_budget(scope, name, window)
        if budget is not None and self.store is not None:
            await asyncio.to_thread(self.store.save_budget, budget, True)
        if self.shared is not None:
            self.shared.budgets = list(self._budgets.values())
        return removed

    def budgets(self) -> list[Budget]:
        return list(self._budgets.values())
