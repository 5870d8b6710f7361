"""`/openapi.json`: an OpenAPI 3.1 document of the served API, generated from the same
schemas the edge checks bodies against (so the document cannot drift from the checks)."""

from __future__ import annotations

from typing import Any

import msgspec

from hybridfast.validation.schema import SCHEMAS

_REF = "#/components/schemas/{name}"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The client protocol's error shape, with a stable `code` (ERR_...).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "code"],
        },
        "type": {"type": "string"},
    },
    "required": ["error"],
}


def _answers(ok: str) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    content = {"application/json": {"schema": error}}
    out: dict[str, Any] = {"200": {"description": ok}}
    for status, what in (
        ("400", "malformed request (ERR_INVALID_REQUEST; `param` names the field)"),
        ("401", "missing or unknown key (ERR_UNAUTHORIZED)"),
        ("404", "unknown model (ERR_MODEL_NOT_FOUND)"),
        ("413", "body over server.max_body_bytes (ERR_REQUEST_TOO_LARGE)"),
        ("429", "budget or rate limit (ERR_BUDGET_EXCEEDED, ERR_RATE_LIMITED)"),
        ("502", "every deployment failed (ERR_PROVIDER_UNAVAILABLE)"),
    ):
        out[status] = {"description": what, "content": content}
    return out


_GETS = {
    "/v1/models": "Groups, routes and deployments, in OpenAI's list shape",
    "/healthz": "Liveness: answers as soon as the process serves",
    "/readyz": "Readiness: 200 once the gateway opened its ledger, cache and router",
}


def document(version: str = "0") -> dict[str, Any]:
    """The OpenAPI document; every registered endpoint with its request schema."""
    structs = sorted({s.struct for s in SCHEMAS.values()}, key=lambda s: s.__name__)
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    components["Error"] = _ERROR_SCHEMA
    paths: dict[str, Any] = {}
    for path, schema in sorted(SCHEMAS.items()):
        paths[path] = {
            "post": {
                "summary": schema.summary,
                "operationId": "post" + path.replace("/", "_"),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": _REF.format(name=schema.struct.__name__)}
                        }
                    },
                },
                "responses": _answers("the answer (JSON, or an SSE stream when streaming)"),
            }
        }
    for path, summary in _GETS.items():
        paths[path] = {
            "get": {
                "summary": summary,
                "operationId": "get" + path.replace("/", "_"),
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hybridfast",
            "version": version,
            "description": "OpenAI- and Anthropic-compatible AI gateway",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}],
    }
