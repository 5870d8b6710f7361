"""Budgets as the ledger holds them: from config, changed through the admin API.

A budget is identified by `(scope, name, window)`; its limit is integer picodollars. The
config's `limit_usd` is read through its shortest decimal form, so `limit_usd: 0.1` is
exactly ten cents.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from hybridfast import _core
from hybridfast._core import PICODOLLARS_PER_USD, format_usd, parse_usd
from hybridfast.config import BudgetConfig
from hybridfast.errors import BudgetExceeded, InvalidRequest
from hybridfast.types import Caller

SCOPES = ("global", "key", "user", "team", "model")
WINDOWS = ("hour", "day", "month", "total")


@dataclass(frozen=True, slots=True)
class Budget:
    scope: str
    name: str | None
    window: str
    limit: int  # picodollars
    soft_fraction: float = 0.8

    @property
    def ident(self) -> tuple[str, str | None, str]:
        return (self.scope, self.name, self.window)

    @property
    def label(self) -> str:
        who = self.scope if self.name is None else f"{self.scope}:{self.name}"
        return f"{who}/{self.window}"

    def as_tuple(self) -> tuple[str, str | None, str, int, float]:
        return (self.scope, self.name, self.window, self.limit, self.soft_fraction)


@dataclass(frozen=True, slots=True)
class BudgetState:
    budget: Budget
    window_start_ms: int
    spent: int
    reserved: int

    @property
    def remaining(self) -> int:
        return max(0, self.budget.limit - self.spent - self.reserved)

    def as_json(self) -> dict[str, object]:
        b = self.budget
        return {
            "scope": b.scope,
            "name": b.name,
            "window": b.window,
            "limit_usd": format_usd(b.limit),
            "spent_usd": format_usd(self.spent),
            "reserved_usd": format_usd(self.reserved),
            "remaining_usd": format_usd(self.remaining),
            "limit_picodollars": b.limit,
            "spent_picodollars": self.spent,
            "reserved_picodollars": self.reserved,
            "remaining_picodollars": self.remaining,
            "soft_fraction": b.soft_fraction,
            "window_start_ms": None if b.window == "total" else self.window_start_ms,
        }


def usd_to_picos(value: float | int | str, where: str = "limit_usd") -> int:
    # The float's shortest exact decimal, positional: repr writes 0.000001 as "1e-06".
    text = format(Decimal(repr(value)), "f") if isinstance(value, float) else str(value)
    try:
        return parse_usd(text)
    except Exception:
        raise InvalidRequest(f"{where}: not an exact dollar amount: {value!r}") from None


def from_config(budgets: list[BudgetConfig]) -> list[Budget]:
    return [
        Budget(b.scope, b.name, b.window, usd_to_picos(b.limit_usd), b.soft_fraction)
        for b in budgets
    ]


def from_request(item: object) -> Budget:
    """A budget from a `PUT /admin/budgets` item: `{scope, name?, window?, limit_usd,
    soft_fraction?}`; `limit_usd` a number or a decimal string (exact either way)."""
    if not isinstance(item, dict):
        raise InvalidRequest("each budget is an object {scope, name, window, limit_usd}")
    scope = item.get("scope")
    name = item.get("name")
    window = item.get("window", "total")
    if scope not in SCOPES:
        raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}")
    if window not in WINDOWS:
        raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)}")
    if scope == "global":
        if name is not None:
            raise InvalidRequest("a global budget has no name")
    elif not isinstance(name, str) or not name:
        raise InvalidRequest(f"a {scope} budget needs the name of the {scope}")
    limit = item.get("limit_usd")
    if isinstance(limit, bool) or not isinstance(limit, int | float | str):
        raise InvalidRequest("limit_usd must be a number of dollars")
    picos = usd_to_picos(limit)
    if picos < 0:
        raise InvalidRequest("limit_usd cannot be negative")
    soft = item.get("soft_fraction", 0.8)
    if isinstance(soft, bool) or not isinstance(soft, int | float) or not 0 <= soft <= 1:
        raise InvalidRequest("soft_fraction must be a number between 0 and 1")
    return Budget(str(scope), name, str(window), picos, float(soft))


def usd(picos: int) -> float:
    """For display only."""
    return picos / PICODOLLARS_PER_USD


def model_group(deployment_id: str | None) -> str | None:
    """`smart#1` → `smart`: the group a deployment id belongs to."""
    if deployment_id is None:
        return None
    return deployment_id.rsplit("#", 1)[0]


def refusal(scope: str, remaining: int) -> BudgetExceeded:
    """The client's answer when budget `scope` (a label: `team:research/month`) has only
    `remaining` picodollars left: the one place a budget refusal is worded, whether the
    books or a shared counter refused."""
    return BudgetExceeded(
        f"budget {scope} cannot cover this request: ${format_usd(remaining)} left",
        headers={
            "x-hybridfast-budget": scope,
            "x-hybridfast-budget-remaining-usd": format_usd(remaining),
        },
    )


class SharedCounter(Protocol):
    """Budgets counted across instances (`ledger.counter`: Redis or PostgreSQL): holds
    taken all or none per request, idempotent by request id. The service talks to this;
    `hybridfast.ledger.shared` and `hybridfast.ledger.shared_pg` implement it."""

    budgets: list[Budget]

    async def seed(self, books: _core.Ledger) -> None: ...

    async def reserve(
        self, caller: Caller, group: str | None, request_id: str, amount: int
    ) -> None: ...

    async def settle(
        self, caller: Caller, group: str | None, request_id: str, cost: int
    ) -> None: ...

    async def release(self, request_id: str) -> None: ...

    async def change_limit(
        self, budget: Budget, old_limit: int | None, states: list[BudgetState]
    ) -> None: ...

    async def state(self, budget: Budget, now_ms: int) -> dict[str, int] | None: ...

    async def close(self) -> None: ...
