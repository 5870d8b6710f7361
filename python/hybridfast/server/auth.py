"""API keys: which caller a request's key belongs to. The key itself goes no further than
this module: the pipeline and the ledger see a `Caller` (key name, user, team, tags)."""

from __future__ import annotations

from aiohttp import web

from hybridfast.config import Config
from hybridfast.server.state import CALLER
from hybridfast.types import ANONYMOUS, Caller


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
    """The authenticated caller, with the body's `user` when the key names none."""
    caller: Caller = request.get(CALLER, ANONYMOUS)
    if user and caller.user is None:
        caller = Caller(key_name=caller.key_name, user=user, team=caller.team, tags=caller.tags)
    return caller
