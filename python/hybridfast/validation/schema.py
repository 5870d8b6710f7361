"""The edge check every request body passes before anything else runs: valid JSON, an
object, nested no deeper than `MAX_DEPTH`, and the known fields of its endpoint's schema
(a msgspec struct) of the right type and range. Unknown fields are left alone: they travel
to upstreams that speak the same API.

Each endpoint registers its schema once (`register`); the server calls `validated_body`
with the endpoint's path and gets the decoded body back, or an `InvalidParam` (400,
`ERR_INVALID_REQUEST`) whose `param` is the path of the first bad field
(`messages[0].content[1].text`). The same registry feeds `/openapi.json`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson
from msgspec import Meta

from hybridfast.errors import InvalidRequest

# Deeper than any real request (tool schemas nest a dozen levels); far below the depth at
# which encoders give up (orjson: 254) or Python's recursion limit bites.
MAX_DEPTH = 64
# A positive integer every upstream and the ledger's 64-bit arithmetic can hold.
MAX_TOKENS = 2**31 - 1

ErrorShape = Literal["openai", "anthropic"]

# A model name travels in answer headers (`x-hybridfast-model`): printable, one line, short.
ModelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=256,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a model, group or route name (GET /v1/models)",
    ),
]


class InvalidParam(InvalidRequest):
    """A request field with the wrong type, value or range; `param` names where it is."""

    def __init__(self, message: str, *, param: str | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.param = param


@dataclass(frozen=True)
class EdgeSchema:
    path: str  # the endpoint, e.g. "/v1/chat/completions"
    struct: type[msgspec.Struct]
    summary: str
    error_shape: ErrorShape = "openai"


SCHEMAS: dict[str, EdgeSchema] = {}


def register(
    path: str, struct: type[msgspec.Struct], summary: str, *, error_shape: ErrorShape = "openai"
) -> None:
    """Makes `struct` the schema of POST `path` (and part of /openapi.json). Call it once,
    at import time of the module that defines the struct."""
    SCHEMAS[path] = EdgeSchema(path, struct, summary, error_shape)


def validated_body(path: str, raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw`, checked against the schema registered for `path`."""
    check_depth(raw)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidParam(
            f"the body is not valid JSON ({exc.msg} at position {exc.pos})",
            param=None,
            hint="send a JSON object with Content-Type: application/json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidParam("the body must be a JSON object", param=None)
    schema = SCHEMAS.get(path)
    if schema is not None:
        try:
            msgspec.convert(body, schema.struct)
        except msgspec.ValidationError as exc:
            raise _field_error(str(exc)) from None
    return body


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _field_error(message: str) -> InvalidParam:
    at = _AT.search(message)
    param = at.group("path").lstrip(".") if at else ""
    detail = _AT.sub("", message)
    missing = _MISSING.search(detail)
    if missing:
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
        detail = f"missing required field `{missing.group(1)}`"
    where = f"`{param}`: " if param else ""
    return InvalidParam(f"{where}{detail}", param=param or None)


# Strings are removed before brackets are counted: a bracket inside a string is text.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def check_depth(raw: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuses JSON nested deeper than `limit`. Costs two `bytes.count`s for a body with
    fewer brackets than the limit (nearly every chat body); otherwise a C-speed pass."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    brackets = np.frombuffer(_JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET), np.uint8)
    # Openers count +1, closers -1 ("[" 0x5B and "{" 0x7B have bit 0x02 set, "]" 0x5D and
    # "}" 0x7D have it clear); the running sum is the depth.
    steps = (brackets & 0x02).astype(np.int32) - 1
    if brackets.size and int(np.cumsum(steps).max()) > limit:
        raise InvalidParam(
            f"the body is nested deeper than {limit} levels",
            param=None,
            hint="flatten the structure; no API field needs this depth",
        )
