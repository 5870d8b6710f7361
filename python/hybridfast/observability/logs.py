"""Logs: `--log-format text` (human lines) or `json` (one JSON object per line, for Loki,
Elasticsearch, CloudWatch...), and the one line per finished request.

A request line carries ids, names, numbers and codes (`RequestRecord`): never a key, a
prompt or an answer. Its logger is `hybridfast.requests` at INFO, so `log_level: warning`
(or a logging config that silences that logger) turns the lines off.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

from hybridfast._core import format_usd
from hybridfast.observability.record import RequestRecord

REQUEST_LOGGER = "hybridfast.requests"
request_log = logging.getLogger(REQUEST_LOGGER)

# LogRecord's own attributes: everything else on a record came in through `extra=`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339, UTC, ms), level, logger, message, the
    record's `extra=` fields, and the exception's text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def _rfc3339(created: float) -> str:
    seconds = int(created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int((created - seconds) * 1000):03d}Z"


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    """The root logger's one handler (stderr) in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def request_fields(record: RequestRecord) -> dict[str, Any]:
    """The request line's fields (JSON names; cost as an exact decimal string)."""
    return {
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "endpoint": record.endpoint,
        "route": record.route,
        "deployment": record.deployment,
        "model": record.model,
        "key": record.key_name,
        "team": record.team,
        "status": record.status,
        "code": record.code,
        "stream": record.stream,
        "cache": record.cache,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cached_input_tokens": record.cached_input_tokens,
        "cost_usd": format_usd(record.cost_picos),
        "latency_ms": round(record.latency_ms, 3),
        "ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 3),
        "overhead_ms": None if record.overhead_ms is None else round(record.overhead_ms, 3),
        "fallbacks": record.fallbacks,
        "recovered": record.recovered,
    }


def log_request(record: RequestRecord) -> None:
    """The request's line: its fields in JSON, a short summary in text."""
    if not request_log.isEnabledFor(logging.INFO):
        return
    level = logging.WARNING if record.status >= 500 else logging.INFO
    request_log.log(
        level,
        "%s %s %s %d %s %.1fms",
        record.request_id,
        record.endpoint,
        record.deployment or "-",
        record.status,
        record.code or record.cache,
        record.latency_ms,
        extra={"request": request_fields(record)},
    )
