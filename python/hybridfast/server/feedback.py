"""Feedback and experiments over HTTP.

- `POST /v1/feedback` `{request_id | episode_id, metric, value, comment?}`: any caller, about its
  own requests (a virtual key cannot judge another key's answers). 201 with the stored row.
- `GET /admin/feedback?format=jsonl|csv`: every row, for analysis or fine-tuning filters.
- `GET /admin/experiments`: each route under experiment (`router: bandit`), per arm: judged
  answers, mean, 95% interval, probability of being best, expected loss; running or stopped.
"""

from __future__ import annotations

import asyncio
import csv
import io
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from hybridfast.errors import GatewayError
from hybridfast.experiments.bandit import EXPERIMENTS
from hybridfast.experiments.feedback import (
    COLUMNS,
    Answered,
    PostgresStore,
    Recent,
    SqliteStore,
    Store,
    feedback_row,
    parse_feedback,
)
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.server.auth import caller_for
from hybridfast.server.state import gateway_key


@dataclass
class FeedbackService:
    """Opens its table on first use, not at start: a ledger path that cannot be opened is the
    ledger's error to report (serve exits 2 saying so), not the feedback table's."""

    open_store: Callable[[], Store]
    recent: Recent = field(default_factory=Recent)
    _store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = self.open_store()
        return self._store


# One service per gateway (the installer makes it; handlers find it through the app's gateway).
_SERVICES: weakref.WeakKeyDictionary[Gateway, FeedbackService] = weakref.WeakKeyDictionary()


def install(gateway: Gateway) -> None:
    """Opens the feedback table beside the ledger and remembers who answered each request."""
    ledger = gateway.config.ledger

    def open_store() -> Store:
        if ledger.backend == "postgres" and ledger.dsn:
            return PostgresStore(ledger.dsn, ledger.schema)
        return SqliteStore(ledger.sibling("feedback") if ledger.backend == "sqlite" else None)

    service = _SERVICES[gateway] = FeedbackService(open_store)

    async def remember(
        ctx: RequestContext, _request: PipelineRequest, _answer: PipelineAnswer | None
    ) -> None:
        if ctx.status == 200:
            answered = Answered(ctx.route, ctx.deployment_id, ctx.caller.key_name)
            service.recent.add(ctx.request_id, answered)

    gateway.hooks.add("after_answer", remember, name="feedback")


def _service(request: web.Request) -> FeedbackService:
    service = _SERVICES.get(request.app[gateway_key])
    if service is None:
        raise GatewayError(
            "feedback is not set up on this gateway", code="ERR_NOT_SUPPORTED", status=501
        )
    return service


routes = web.RouteTableDef()


@routes.post("/v1/feedback")
async def post_feedback(request: web.Request) -> web.Response:
    service = _service(request)
    feedback = parse_feedback(await request.read())
    caller = caller_for(request, None)
    answered = service.recent.get(feedback.request_id)
    if answered is not None and caller.key_name not in (answered.key_name, "master"):
        answered = None  # another key's request: judged as unknown, never attributed
    if feedback.request_id is not None and answered is None and feedback.episode_id is None:
        raise GatewayError(
            f"no recent request {feedback.request_id!r} of this key",
            code="ERR_NOT_FOUND",
            status=404,
            hint="send the x-hybridfast-request-id of one of your own recent answers",
        )
    row = feedback_row(feedback, answered, caller.key_name)
    await asyncio.to_thread(service.store.add, row)
    if answered is not None:
        experiment = EXPERIMENTS.get(answered.route)
        if experiment is not None and experiment.metric == feedback.metric and answered.deployment:
            experiment.record(answered.deployment, feedback.value)
    body = dict(zip(COLUMNS, row, strict=True))
    return web.Response(status=201, body=orjson.dumps(body), content_type="application/json")


@routes.get("/admin/feedback")
async def export_feedback(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(lambda: list(_service(request).store.rows()))
    if request.query.get("format", "jsonl") == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return web.Response(text=out.getvalue(), content_type="text/csv")
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    return web.Response(body=body, content_type="application/x-ndjson")


@routes.get("/admin/experiments")
async def experiments(_request: web.Request) -> web.Response:
    results = [e.results() for e in EXPERIMENTS.by_route.values()]
    return web.Response(
        body=orjson.dumps({"experiments": results}), content_type="application/json"
    )
