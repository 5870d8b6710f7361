"""Admin endpoints of the ledger (mounted behind the master key by the app factory).

- `GET /admin/spend?by=model|key|user|team|deployment|provider|route|hour|day|month|total
  &since=...&until=...&format=json|csv`: spend from the running ledger's books (history
  from the store at start-up plus everything since), exact dollars and picodollars.
- `GET /admin/budgets`: every budget with its limit, spent, reserved and remaining.
- `PUT /admin/budgets` with one budget or a list, `{scope, name?, window?, limit_usd,
  soft_fraction?}`: add or change them (kept in the store, so they outlive a restart).
- `DELETE /admin/budgets?scope=...&name=...&window=...`: remove one.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from hybridfast._core import format_usd
from hybridfast.errors import GatewayError, InvalidRequest
from hybridfast.ledger import budgets as budget_mod
from hybridfast.ledger import report
from hybridfast.ledger.service import NativeLedger
from hybridfast.server.state import gateway_key

routes = web.RouteTableDef()


def _ledger(request: web.Request) -> NativeLedger:
    ledger = request.app[gateway_key].ledger
    if not isinstance(ledger, NativeLedger):
        raise GatewayError(
            "this gateway's ledger has no admin operations",
            code="ERR_NOT_SUPPORTED",
            status=501,
        )
    return ledger


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@routes.get("/admin/spend")
async def spend(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    q = request.query
    by = q.get("by", "model")
    since, until = report.parse_time(q.get("since")), report.parse_time(q.get("until"))
    records = report.rows(ledger.books, by, since, until)
    if q.get("format") == "csv":
        return web.Response(text=report.to_csv(records), content_type="text/csv")
    if q.get("format", "json") != "json":
        raise InvalidRequest("format must be json or csv")
    total = sum(int(r["cost_picodollars"]) for r in records)
    return _json(
        {
            "by": by,
            "since": report.iso(since),
            "until": report.iso(until),
            "rows": records,
            "total_usd": None if by in ("key", "user", "team") else format_usd(total),
        }
    )


@routes.get("/admin/budgets")
async def list_budgets(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    return _json({"budgets": [s.as_json() for s in ledger.budget_states()]})


@routes.put("/admin/budgets")
async def put_budgets(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be JSON: a budget or a list of budgets") from None
    items = body if isinstance(body, list) else [body]
    parsed = [budget_mod.from_request(item) for item in items]  # all checked before any change
    for budget in parsed:
        await ledger.set_budget(budget)
    return _json({"budgets": [s.as_json() for s in ledger.budget_states()]})


@routes.delete("/admin/budgets")
async def delete_budget(request: web.Request) -> web.Response:
    ledger = _ledger(request)
    q = request.query
    scope, name, window = q.get("scope"), q.get("name") or None, q.get("window", "total")
    if scope not in budget_mod.SCOPES or window not in budget_mod.WINDOWS:
        raise InvalidRequest("give scope (and name, window) of the budget to remove")
    if not await ledger.remove_budget(scope, name, window):
        raise GatewayError("no such budget", code="ERR_NOT_FOUND", status=404)
    return _json({"budgets": [s.as_json() for s in ledger.budget_states()]})
