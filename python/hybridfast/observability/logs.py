"""Logs: `--log-format text` (human lines) or `json` (one JSON object per line, for Loki,
Elasticsearch, CloudWatch...), and the one line per finished request.

A request line carries ids, names, numbers and codes (`RequestRecord`): never a key, a
prompt or an answer. Its logger is `hybridfast.requests` at INFO (WARNING for a 5xx), so
`log_level: warning` (or setting that logger's level) turns the lines of answered
requests off.
"""

from __future__ import annotations

import asyncio
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


class RequestLines:
    """Writes request lines in the configured format, a batch at a time.

    They skip the `logging` machinery (record objects, formatters, scrubbing filters: most
    of a request's CPU when it ran through them) because they are built from names,
    numbers and codes only. `hybridfast.requests` still decides: below INFO there are no
    lines. Lines made in one event-loop turn are written with one `write` shortly after.
    """

    def __init__(self, fmt: Literal["text", "json"], stream: Any = None, delay_s: float = 0.05):
        self.json = fmt == "json"
        self._stream = stream
        self._delay_s = delay_s
        self._pending: list[bytes] = []
        self._scheduled = False

    def add(self, record: RequestRecord) -> None:
        if not request_log.isEnabledFor(logging.INFO):
            return
        self._pending.append(self._json(record) if self.json else self._text(record))
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_later(self._delay_s, self.flush)
            except RuntimeError:  # no loop (tests, the CLI): write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        stream = self._stream if self._stream is not None else sys.stderr
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()  # keep the order with lines written through the text layer
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode())
            stream.flush()

    @staticmethod
    def _json(record: RequestRecord) -> bytes:
        line = {
            "ts": _rfc3339(time.time()),
            "level": "warning" if record.status >= 500 else "info",
            "logger": REQUEST_LOGGER,
            "message": _summary(record),
            **request_fields(record),
        }
        return orjson.dumps(line) + b"\n"

    @staticmethod
    def _text(record: RequestRecord) -> bytes:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        level = "WARNING" if record.status >= 500 else "INFO"
        return f"{stamp} {level} {REQUEST_LOGGER}: {_summary(record)}\n".encode()


def _summary(record: RequestRecord) -> str:
    return (
        f"{record.request_id} {record.endpoint} {record.deployment or '-'} {record.status} "
        f"{record.code or record.cache} {record.latency_ms:.1f}ms"
    )
