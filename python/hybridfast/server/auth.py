"""API keys: which caller a request's key belongs to. The key itself goes no further than
this module: the pipeline and the ledger see a `Caller` (key name, user, team, tags)."""

from __future__ import annotations

from aiohttp import web

from hybridfast.config import Config
from hybridfast.pipeline.context import RequestContext
from hybridfast.server.state import CALLER
from hybridfast.types import ANONYMOUS, Caller
from hybridfast.validation.edge import CLIENT_REQUEST_ID_HEADER, IdentityPolicy, correlation_id

# Per request: whose end users the body may name (set by the auth middleware).
IDENTITY = web.RequestKey("identity", IdentityPolicy)
_KEY_IS_IDENTITY = IdentityPolicy({})


def callers_by_key(config: Config) -> dict[str, Caller]:
    callers = {
        k.key: Caller(key_name=k.name, user=k.user, team=k.team, tags=tuple(k.tags))
        for k in config.keys
    }
    if config.server.master_key:
        callers[config.server.master_key] = Caller(key_name="master")
    return callers


def presented_key(request: web.Request) -> str | None:
    """`Authorization: Bearer <key>` (OpenAI's clients) or `x-api-key` (Anthropic's)."""
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
    return request.headers.get("x-api-key")


def caller_for(request: web.Request, user: str | None) -> Caller:
    """The authenticated caller. Identity comes from the key: the body's `user` counts only
    for anonymous gateways, the master key, and keys configured `allow_client_user` (then
    inside the key's team; see `hybridfast.validation.edge`)."""
    caller: Caller = request.get(CALLER, ANONYMOUS)
    policy: IdentityPolicy = request.get(IDENTITY, _KEY_IS_IDENTITY)
    return policy.caller(caller, user)


def note_client_request_id(request: web.Request, ctx: RequestContext) -> None:
    """A client's `x-hybridfast-request-id` is a correlation id kept beside the gateway's own
    (in `ctx.state` and echoed as `x-hybridfast-client-request-id`), never the id itself;
    one that is long, non-ASCII or unprintable is ignored."""
    client_id = correlation_id(request.headers.get("x-hybridfast-request-id"))
    if client_id is not None:
        ctx.state["client_request_id"] = client_id
        ctx.response_headers[CLIENT_REQUEST_ID_HEADER] = client_id
