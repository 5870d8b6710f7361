"""Training data for the learned router from feedback.

While serving, the prompt embedding of each answered request to a route listed in
`router_training.routes` is kept by request id, with the deployment that answered (a
`router_samples` table beside the ledger: its own SQLite file next to the ledger's, or the
ledger's PostgreSQL database and schema). Embeddings only, never the prompt text.

Training joins those samples with the feedback store on the request id. The label is the
question the learned router answers, "did the cheap model suffice": a request the cheap
deployment answered is a positive example when the mean of its feedback values for the metric
is at least `good`, a negative one otherwise. Requests the strong model answered say nothing
about the cheap one and are skipped (and counted), so the route must send some traffic to the
cheap model while the data is gathered (the `cost` strategy, a `weighted` A/B or a `bandit`
route).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridfast.config import Config
from hybridfast.errors import ConfigError
from hybridfast.experiments.feedback import PostgresStore as FeedbackPostgres
from hybridfast.experiments.feedback import SqliteStore as FeedbackSqlite
from hybridfast.experiments.feedback import Store as FeedbackStore

Vector = npt.NDArray[np.float32]
COLUMNS = ("ts_ms", "request_id", "route", "deployment", "model_group", "embedder", "vector")
# The least judged cheap answers, with both outcomes among them, that training accepts: fewer
# leave nothing to fit on once a third is held out to calibrate the threshold.
MIN_ROWS = 10
_SCHEMA = """CREATE TABLE IF NOT EXISTS router_samples (
    ts_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    deployment TEXT,
    model_group TEXT,
    embedder TEXT NOT NULL,
    vector {blob} NOT NULL
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS router_samples_ts ON router_samples (ts_ms)"


class SampleStore(Protocol):
    def add(self, row: tuple[Any, ...]) -> None: ...
    def rows(self) -> Iterator[dict[str, Any]]: ...
    def delete_before(self, ts_ms: int) -> int: ...
    def close(self) -> None: ...


class _Sql:
    """The one table, in SQLite (`?`) or PostgreSQL (`%s`); a lock serialises the connection."""

    mark = "?"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def add(self, row: tuple[Any, ...]) -> None:
        marks = ", ".join([self.mark] * len(COLUMNS))
        sql = f"INSERT INTO router_samples ({', '.join(COLUMNS)}) VALUES ({marks})"
        with self._lock:
            self._conn.execute(sql, row)
            self._commit()

    def rows(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            found = self._conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM router_samples ORDER BY ts_ms"
            ).fetchall()
        for row in found:
            yield dict(zip(COLUMNS, row, strict=True))

    def delete_before(self, ts_ms: int) -> int:
        with self._lock:
            cur = self._conn.execute(
                f"DELETE FROM router_samples WHERE ts_ms < {self.mark}", (ts_ms,)
            )
            self._commit()
        return int(cur.rowcount)

    def _commit(self) -> None:
        self._conn.commit()

    def close(self) -> None:
        self._conn.close()


class SqliteSamples(_Sql):
    def __init__(self, path: str | None) -> None:
        conn = sqlite3.connect(path or ":memory:", check_same_thread=False, timeout=30)
        if path:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA.format(blob="BLOB"))
        conn.execute(_INDEX)
        conn.commit()
        super().__init__(conn)


class PostgresSamples(_Sql):
    mark = "%s"

    def __init__(self, dsn: str, schema: str = "public") -> None:
        import psycopg  # the `postgres` extra

        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(_SCHEMA.format(blob="BYTEA"))
        conn.execute(_INDEX)
        super().__init__(conn)

    def _commit(self) -> None:
        pass  # autocommit


def open_samples(config: Config) -> SampleStore:
    ledger = config.ledger
    if ledger.backend == "postgres" and ledger.dsn:
        return PostgresSamples(ledger.dsn, ledger.schema)
    return SqliteSamples(ledger.sibling("router-samples") if ledger.backend == "sqlite" else None)


def open_feedback(config: Config) -> FeedbackStore:
    ledger = config.ledger
    if ledger.backend == "postgres" and ledger.dsn:
        return FeedbackPostgres(ledger.dsn, ledger.schema)
    return FeedbackSqlite(ledger.sibling("feedback") if ledger.backend == "sqlite" else None)


def open_for_training(config: Config) -> tuple[SampleStore, FeedbackStore]:
    """The stores `serve` wrote with this config, or a `ConfigError` saying why there are none
    (the CLI reads them; it never creates them)."""
    ledger = config.ledger
    if ledger.backend == "memory":
        raise ConfigError(
            "ledger.backend is memory: kept embeddings and feedback live only while serve runs",
            hint="use the sqlite or postgres ledger to train from feedback",
        )
    if ledger.backend == "postgres":
        _check_postgres(ledger.dsn or "", ledger.schema)
    if ledger.backend == "sqlite":
        for part, what in (("router-samples", "kept prompt embeddings"), ("feedback", "feedback")):
            path = ledger.sibling(part)
            if not Path(path).is_file():
                raise ConfigError(
                    f"no {what} at {path} (beside ledger.path)",
                    hint="list the route in router_training.routes, run serve with this config "
                    "and POST /v1/feedback on its answers; or pass the config serve uses",
                )
    return open_samples(config), open_feedback(config)


def _check_postgres(dsn: str, schema: str) -> None:
    """Both tables in the ledger's schema, or a `ConfigError` naming what is missing (opening
    the stores would create them, and an empty schema would pass for "too little feedback")."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "ledger.backend postgres needs psycopg", hint="pip install 'hybridfast[postgres]'"
        ) from None
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = conn.execute(
                "SELECT to_regclass(%s), to_regclass(%s)",
                (f'"{schema}".router_samples', f'"{schema}".feedback'),
            ).fetchone()
    except psycopg.OperationalError as exc:
        raise ConfigError(f"ledger.dsn: cannot connect to PostgreSQL ({exc})") from None
    tables = (("router_samples", "kept prompt embeddings"), ("feedback", "feedback"))
    for (table, what), regclass in zip(tables, found or (None, None), strict=True):
        if regclass is None:
            raise ConfigError(
                f"no {what}: no {table} table in the PostgreSQL schema {schema!r} (ledger.schema)",
                hint="list the route in router_training.routes, run serve with this config "
                "and POST /v1/feedback on its answers; or pass the config serve uses",
            )


def sample_row(
    request_id: str, route: str, deployment: str | None, group: str | None, embedder: str, v: Vector
) -> tuple[Any, ...]:
    blob = np.ascontiguousarray(v, dtype=np.float32).tobytes()
    return (int(time.time() * 1000), request_id, route, deployment, group, embedder, blob)


@dataclass(frozen=True)
class FeedbackData:
    """Labelled embeddings, and what was left out and why."""

    x: Vector
    cheap_ok: npt.NDArray[np.float64]
    embedder: str
    judged: int  # requests with feedback on the metric and a kept embedding
    strong: int  # of those, answered by another deployment than the cheap one (skipped)

    def describe(self) -> str:
        good = int(self.cheap_ok.sum())
        return (
            f"{self.judged} judged request(s) with a kept embedding: {len(self.cheap_ok)} "
            f"answered by the cheap model ({good} good, {len(self.cheap_ok) - good} not), "
            f"{self.strong} by another (skipped)"
        )


def _is_cheap(cheap: str, sample: dict[str, Any]) -> bool:
    return cheap in (sample["deployment"], sample["model_group"])


def feedback_data(
    samples: SampleStore,
    feedback: FeedbackStore,
    *,
    metric: str,
    cheap: str,
    good: float = 0.5,
    route: str | None = None,
) -> FeedbackData:
    """The cheap model's judged answers as training rows (see the module's docstring)."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in feedback.rows():
        if row["metric"] == metric and row["request_id"]:
            values[str(row["request_id"])].append(float(row["value"]))
    vectors: list[Vector] = []
    labels: list[float] = []
    embedders: set[str] = set()
    judged = strong = 0
    for sample in samples.rows():
        judged_values = values.get(str(sample["request_id"]))
        if judged_values is None or (route is not None and sample["route"] != route):
            continue
        judged += 1
        if not _is_cheap(cheap, sample):
            strong += 1
            continue
        embedders.add(str(sample["embedder"]))
        vectors.append(np.frombuffer(bytes(sample["vector"]), dtype=np.float32))
        labels.append(1.0 if sum(judged_values) / len(judged_values) >= good else 0.0)
    if len(embedders) > 1:
        raise ConfigError(
            f"the kept embeddings come from several embedders ({', '.join(sorted(embedders))})",
            hint="train on one route (--route) whose samples share an embedder",
        )
    x = np.vstack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)
    data = FeedbackData(x, np.array(labels), embedders.pop() if embedders else "", judged, strong)
    ok = data.cheap_ok
    if len(ok) < MIN_ROWS or ok.min() == ok.max():
        raise ConfigError(
            f"too little feedback to train on: {data.describe()}; training needs at least "
            f"{MIN_ROWS} judged answers of the cheap model, good and not good among them",
            hint=f"list the route in router_training.routes, send some of its traffic to "
            f"{cheap!r}, and POST /v1/feedback with metric {metric!r} on those answers",
        )
    return data
