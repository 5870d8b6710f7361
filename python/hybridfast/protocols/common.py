"""Request checks both client protocols share."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from hybridfast.errors import InvalidRequest


def read_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the body is not valid JSON ({exc.msg} at position {exc.pos})",
            hint="send a JSON object with Content-Type: application/json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def check_number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"`{key}` must be a number")
    if not low <= value <= high:
        raise InvalidRequest(f"`{key}` must be between {low:g} and {high:g}")
    return float(value)


def check_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"`{key}` must be a positive integer")
    return int(value)


def check_stop(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value or None
    raise InvalidRequest(f"`{key}` must be a string or a list of strings")


CacheControl = Literal["default", "no-cache", "no-store"]


def parse_cache_control(body_value: Any, headers: Any) -> CacheControl:
    """`Cache-Control: no-cache|no-store`, or the body's `cache` field: a string, or
    LiteLLM's `{"no-cache": true, "no-store": true}`."""
    if isinstance(body_value, str) and body_value in ("no-cache", "no-store", "default"):
        return body_value  # type: ignore[return-value]
    if isinstance(body_value, dict):
        if body_value.get("no-store"):
            return "no-store"
        if body_value.get("no-cache"):
            return "no-cache"
    if headers is not None:
        value = headers.get("Cache-Control")
        if value:
            value = value.lower()
            if "no-store" in value:
                return "no-store"
            if "no-cache" in value:
                return "no-cache"
    return "default"
