"""Feedback on answers: `POST /v1/feedback`, kept in the ledger's database and exported.

A feedback row names a request (its `x-hybridfast-request-id`) or an episode (a client-chosen id
grouping several requests), a metric name, and a value: a boolean (`true` = 1) or a number.
The gateway remembers which route and deployment answered each recent request, so feedback on
a request of a route under experiment updates that experiment's arm at once.

Rows live in a `feedback` table beside the ledger (a SQLite file next to the ledger's, or the
ledger's PostgreSQL database and schema) and come back out with `GET /admin/feedback` (JSON
lines or CSV).
"""

from __future__ import annotations

import collections
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from hybridfast.errors import InvalidRequest

METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_COMMENT = 4096
MAX_ID = 128
# Recent requests remembered for feedback (route, deployment, key), newest kept.
REMEMBERED = 100_000
COLUMNS = (
    "ts_ms",
    "request_id",
    "episode_id",
    "metric",
    "value",
    "comment",
    "key_name",
    "route",
    "deployment",
)
_SCHEMA = """CREATE TABLE IF NOT EXISTS feedback (
    ts_ms BIGINT NOT NULL,
    request_id TEXT,
    episode_id TEXT,
    metric TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    comment TEXT,
    key_name TEXT,
    route TEXT,
    deployment TEXT
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)"


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    metric: str
    value: bool | float
    request_id: str | None = None
    episode_id: str | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    route: str
    deployment: str | None
    key_name: str | None


@dataclass(frozen=True, slots=True)
class Feedback:
    metric: str
    value: float
    request_id: str | None
    episode_id: str | None
    comment: str | None


def parse_feedback(raw: bytes) -> Feedback:
    """The feedback a body describes, or a 400 naming what is wrong."""
    try:
        body = msgspec.json.decode(raw, type=FeedbackBody)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"feedback: {exc}", hint="see the feedback section of the docs"
        ) from None
    except msgspec.DecodeError:
        raise InvalidRequest("feedback: the body must be a JSON object") from None
    if not METRIC_NAME.match(body.metric):
        raise InvalidRequest("feedback: metric must be 1-64 letters, digits or _ . : -")
    if body.request_id is None and body.episode_id is None:
        raise InvalidRequest("feedback: give request_id or episode_id")
    for name, given in (("request_id", body.request_id), ("episode_id", body.episode_id)):
        if given is not None and not (0 < len(given) <= MAX_ID and given.isprintable()):
            raise InvalidRequest(f"feedback: {name} must be 1-{MAX_ID} printable characters")
    value = float(body.value)
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidRequest("feedback: value must be a finite number or a boolean")
    if body.comment is not None and len(body.comment) > MAX_COMMENT:
        raise InvalidRequest(f"feedback: comment is longer than {MAX_COMMENT} characters")
    return Feedback(body.metric, value, body.request_id, body.episode_id, body.comment)


class Recent:
    """Which route and deployment answered each recent request (bounded, newest kept)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._items: collections.OrderedDict[str, Answered] = collections.OrderedDict()

    def add(self, request_id: str, answered: Answered) -> None:
        self._items[request_id] = answered
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, request_id: str | None) -> Answered | None:
        return self._items.get(request_id) if request_id else None


class Store(Protocol):
    def add(self, row: tuple[Any, ...]) -> None: ...
    def rows(self) -> Iterator[dict[str, Any]]: ...
    def close(self) -> None: ...


class SqliteStore:
    """The `feedback` table in its own SQLite file beside the ledger's, or in memory."""

    def __init__(self, path: str | None) -> None:
        self._conn = sqlite3.connect(path or ":memory:", check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock, self._conn:
            if path:
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.execute(_INDEX)

    def add(self, row: tuple[Any, ...]) -> None:
        marks = ", ".join("?" * len(COLUMNS))
        with self._lock, self._conn:
            self._conn.execute(f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({marks})", row)

    def rows(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            found = self._conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY ts_ms"
            ).fetchall()
        for row in found:
            yield dict(zip(COLUMNS, row, strict=True))

    def close(self) -> None:
        self._conn.close()


class PostgresStore:
    """The `feedback` table in the ledger's PostgreSQL database and schema."""

    def __init__(self, dsn: str, schema: str = "public") -> None:
        import psycopg  # the `postgres` extra

        self._conn = psycopg.connect(dsn, autocommit=True)
        self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._conn.execute(f'SET search_path TO "{schema}"')
        self._conn.execute(_SCHEMA)
        self._conn.execute(_INDEX)
        self._lock = threading.Lock()

    def add(self, row: tuple[Any, ...]) -> None:
        marks = ", ".join(["%s"] * len(COLUMNS))
        with self._lock:
            self._conn.execute(f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({marks})", row)

    def rows(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            found = self._conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY ts_ms"
            ).fetchall()
        for row in found:
            yield dict(zip(COLUMNS, row, strict=True))

    def close(self) -> None:
        self._conn.close()


def feedback_row(
    feedback: Feedback, answered: Answered | None, key_name: str | None
) -> tuple[Any, ...]:
    return (
        int(time.time() * 1000),
        feedback.request_id,
        feedback.episode_id,
        feedback.metric,
        feedback.value,
        feedback.comment,
        key_name,
        answered.route if answered else None,
        answered.deployment if answered else None,
    )
