"""Recording stand-ins for the pipeline's parts (`Ledger`, `ResponseCache`), to check what
the gateway asks of them without depending on any one implementation."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hybridfast.errors import BudgetExceeded
from hybridfast.types import (
    CacheHit,
    Caller,
    ChatAnswer,
    ChatRequest,
    Deployment,
    LedgerRecord,
    Picodollars,
    Reservation,
)


@dataclass
class RecordingLedger:
    """Holds reservations like a real ledger would; `limit` (picodollars) refuses
    reservations that would exceed it."""

    limit: Picodollars | None = None
    reserved: list[tuple[Caller, str, str, Picodollars]] = field(default_factory=list)
    settled: list[tuple[Reservation, LedgerRecord]] = field(default_factory=list)
    released: list[Reservation] = field(default_factory=list)
    held: dict[int, Reservation] = field(default_factory=dict)
    spent: Picodollars = 0
    closed: bool = False

    async def reserve(
        self, caller: Caller, deployment: Deployment, request_id: str, worst_case: Picodollars
    ) -> Reservation:
        if self.limit is not None:
            holding = sum(r.amount for r in self.held.values())
            if self.spent + holding + worst_case > self.limit:
                raise BudgetExceeded(f"budget of {self.limit} picodollars exceeded")
        self.reserved.append((caller, deployment.id, request_id, worst_case))
        r = Reservation(request_id=request_id, amount=worst_case)
        self.held[id(r)] = r
        return r

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        held = self.held.pop(id(reservation), None)
        # A request that held nothing (a cache hit, a failure before any hold) settles a
        # zero reservation it never reserved: its line, with no hold to replace.
        unheld = held is None and reservation.amount == 0 and reservation.handle is None
        assert held is reservation or unheld, "settled twice or unknown"
        self.spent += record.cost
        self.settled.append((reservation, record))

    async def release(self, reservation: Reservation) -> None:
        assert self.held.pop(id(reservation), None) is reservation, "released twice or unknown"
        self.released.append(reservation)

    def remaining(self, caller: Caller) -> Picodollars | None:
        return None if self.limit is None else self.limit - self.spent

    async def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[LedgerRecord]:
        return [r for _, r in self.settled]


@dataclass
class RecordingCache:
    """Answers `hits[prompt]` for a request whose last message has that text."""

    hits: dict[str, CacheHit] = field(default_factory=dict)
    lookups: list[ChatRequest] = field(default_factory=list)
    stored: list[tuple[ChatRequest, Caller, ChatAnswer]] = field(default_factory=list)
    bypassed: int = 0

    def ticket(self, request: ChatRequest, caller: Caller) -> Any:
        return SimpleNamespace(lookup=request.cache_control == "default", store=True)

    async def lookup(
        self, request: ChatRequest, caller: Caller, ticket: Any = None
    ) -> CacheHit | None:
        self.lookups.append(request)
        last: Any = request.messages[-1].get("content")
        return self.hits.get(last) if isinstance(last, str) else None

    async def store(
        self, request: ChatRequest, caller: Caller, answer: ChatAnswer, ticket: Any = None
    ) -> None:
        self.stored.append((request, caller, answer))

    def bypass(self, request: ChatRequest) -> bool:
        return False

    def note_bypass(self) -> None:
        self.bypassed += 1

    async def close(self) -> None:
        pass


class RecordingRouter:
    """Wraps a router and records `started`/`finished` as `events`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[tuple[str, str, bool | None]] = []

    def plan(self, name: str, features: Any, caller: Caller) -> Any:
        self.features = features
        return self.inner.plan(name, features, caller)

    def started(self, deployment_id: str) -> None:
        self.events.append(("started", deployment_id, None))
        self.inner.started(deployment_id)

    def finished(self, deployment_id: str, **kw: Any) -> None:
        self.events.append(("finished", deployment_id, kw["ok"]))
        self.inner.finished(deployment_id, **kw)

    def abandoned(self, deployment_id: str) -> None:
        self.events.append(("abandoned", deployment_id, None))
        self.inner.abandoned(deployment_id)
