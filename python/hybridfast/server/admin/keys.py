"""Admin endpoints of virtual keys (behind the master key, like every `/admin` path).

- `POST /admin/keys` `{name, user?, team?, models?, expires_at?, budget_usd?, budget_window?,
  rpm?, tpm?, max_parallel?, metadata?}`: create a key; 201 with the key itself in `key`,
  shown this once (the database keeps only its SHA-256).
- `GET /admin/keys[?include_revoked=true]`, `GET /admin/keys/{name}`: settings and status,
  never the key.
- `POST /admin/keys/{name}/rotate` `{grace_s?}` (default 0): a new key; the old one keeps
  working for `grace_s` seconds.
- `DELETE /admin/keys/{name}`: revoke (401 for the key from then on).
- `GET /admin/audit?limit=100&target=NAME`: the audit log, newest first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import orjson
from aiohttp import web

from hybridfast.errors import InvalidRequest
from hybridfast.security.keys import KeySpec
from hybridfast.security.keys_service import KeyService, service_of
from hybridfast.server.state import gateway_key

routes = web.RouteTableDef()


class RotateBody(msgspec.Struct, forbid_unknown_fields=True):
    grace_s: float = 0.0


def _service(request: web.Request) -> KeyService:
    return service_of(request.app[gateway_key])


def _actor(request: web.Request) -> str:
    return f"master@{request.remote or 'unknown'}"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _decode(raw: bytes, kind: type[Any], empty_ok: bool = False) -> Any:
    if empty_ok and not raw.strip():
        return kind()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("the body must be a JSON object") from None


@routes.post("/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    spec = _decode(await request.read(), KeySpec)
    record, key = await _service(request).create(spec, _actor(request))
    return _json({"key": key, **record.public()}, status=201)


@routes.get("/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    include = request.query.get("include_revoked", "false").lower() in ("1", "true", "yes")
    store = await _service(request).store()
    records = await asyncio.to_thread(store.records, include)
    return _json({"keys": [r.public() for r in records]})


@routes.get("/admin/keys/{name}")
async def get_key(request: web.Request) -> web.Response:
    store = await _service(request).store()
    record = await asyncio.to_thread(store.get, request.match_info["name"])
    return _json(record.public())


@routes.post("/admin/keys/{name}/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    body = _decode(await request.read(), RotateBody, empty_ok=True)
    record, key = await _service(request).rotate(
        request.match_info["name"], body.grace_s, _actor(request)
    )
    return _json({"key": key, **record.public()})


@routes.delete("/admin/keys/{name}")
async def revoke_key(request: web.Request) -> web.Response:
    record = await _service(request).revoke(request.match_info["name"], _actor(request))
    return _json(record.public())


@routes.get("/admin/audit")
async def audit(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("limit: a whole number") from None
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("limit: between 1 and 10000")
    store = await _service(request).store()
    entries = await asyncio.to_thread(store.audit_log, limit, request.query.get("target"))
    return _json({"entries": entries})
