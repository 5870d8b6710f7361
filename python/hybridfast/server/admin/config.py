"""`GET /admin/config` and `POST /admin/config`: the running config, secrets masked, and a new
one checked (as `hybridfast config check` checks it) and applied without a restart.

`POST` takes `{"text": "<yaml>"}`; `?dry_run=1` only checks. A config that does not pass is a
400 `ERR_CONFIG` naming file, line and key path, and changes nothing. One that passes replaces
the file atomically and reconfigures the gateway: the next request uses it, requests in flight
finish on the old one. Every apply is logged with the caller's key name (never a key).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import orjson
from aiohttp import web

from hybridfast.errors import ConfigError, InvalidRequest
from hybridfast.server.auth import caller_for
from hybridfast.server.reload import check_text, editable_source, mask, unmask, write_atomically
from hybridfast.server.state import config_source_key, gateway_key

log = logging.getLogger("hybridfast.audit")
routes = web.RouteTableDef()


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    text: str


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


@routes.get("/admin/config")
async def get_config(request: web.Request) -> web.Response:
    source = request.app.get(config_source_key, "<defaults>")
    try:
        text = editable_source(source).read_text(encoding="utf-8")
    except ConfigError:
        text = "# serve runs on built-in defaults: start it with --config PATH to edit here\n"
    return _json({"source": source, "text": mask(text)[0]})


@routes.post("/admin/config")
async def post_config(request: web.Request) -> web.Response:
    try:
        body = msgspec.json.decode(await request.read(), type=_Body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise InvalidRequest('the body must be {"text": "<the config as YAML>"}') from None
    path = editable_source(request.app.get(config_source_key, "<defaults>"))
    current = path.read_text(encoding="utf-8")
    text = unmask(body.text, current)
    gateway = request.app[gateway_key]
    try:
        config = check_text(text, str(path))
        gateway.followers.check(config)  # templates and the like: before the file changes
    except ConfigError as exc:
        raise InvalidRequest(str(exc), code="ERR_CONFIG", hint=exc.hint) from None
    if request.query.get("dry_run") in ("1", "true"):
        return _json({"applied": False, "message": "the config is valid"})
    await asyncio.to_thread(write_atomically, path, text)
    await gateway.reconfigure(config)
    who = caller_for(request, None).key_name or "anonymous"
    log.info("config: %s applied a new config to %s", who, path)
    return _json({"applied": True, "message": f"applied: {path} reloaded"})
