"""Virtual keys created at run time, and the audit log of every admin action.

Both live in the ledger's database (the SQLite file of `ledger.path`, or the PostgreSQL of
`ledger.dsn` in `ledger.schema`; an in-memory SQLite database with the memory ledger):

- `hybridfast_keys`: one row per key: name (the tenant name budgets and limits use), user,
  team, the models/routes it may call, expiry, budget, rpm/tpm/max_parallel, metadata, who
  created it and when, when it was revoked, and the key's last four characters (to tell
  keys apart in a list). Never the key.
- `hybridfast_key_hashes`: SHA-256 of each key (`sk-hf-` + 256 random bits: a fast hash is
  enough, nothing can be guessed), with an expiry for a rotated-out key's grace period.
  A key is shown once, when created or rotated, and cannot be recovered from the database.
- `hybridfast_audit_log`: who did what to which key, when, with the settings it changed;
  never a key or a hash.

Every method is synchronous and short; async callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from hybridfast.config import LedgerConfig
from hybridfast.errors import ConfigError, GatewayError, InvalidRequest

KEY_PREFIX = "sk-hf-"
NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
RESERVED_NAMES = frozenset({"master", "metrics"})


class KeyNotFound(GatewayError):
    code, status = "ERR_KEY_NOT_FOUND", 404
    hint = "GET /admin/keys (or `hybridfast keys list`) lists the keys"


class KeySpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a caller may set when creating a key (the body of `POST /admin/keys`)."""

    name: str
    user: str | None = None
    team: str | None = None
    # Model, group or route names the key may ask for; empty: any.
    models: list[str] = msgspec.field(default_factory=list)
    # Unix seconds after which the key stops working; None: never.
    expires_at: float | None = None
    # A spending limit for the key, in dollars, over `budget_window`.
    budget_usd: str | None = None
    budget_window: str = "total"
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class KeyRecord(KeySpec, kw_only=True):
    """A stored key, as lists and the auth step see it."""

    created_at: float
    created_by: str
    revoked_at: float | None = None
    last4: str = ""

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["status"] = (
            "revoked"
            if self.revoked_at is not None
            else "active"
            if self.active(time.time())
            else "expired"
        )
        out["key_hint"] = f"{KEY_PREFIX}…{self.last4}"
        out.pop("last4")
        return out


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_spec(spec: KeySpec, reserved: Sequence[str] = ()) -> None:
    """What the types cannot say; raises `InvalidRequest` naming the field."""
    if not NAME.match(spec.name):
        raise InvalidRequest(
            f"name: {spec.name!r} is not a key name",
            hint="1-64 letters, digits and _ . @ : -",
        )
    if spec.name in RESERVED_NAMES or spec.name in reserved:
        raise InvalidRequest(f"name: {spec.name!r} is taken by a key in the config")
    for field in ("rpm", "tpm", "max_parallel"):
        value = getattr(spec, field)
        if value is not None and value < 1:
            raise InvalidRequest(f"{field}: must be at least 1 (leave it out for no limit)")
    if spec.budget_usd is not None:
        try:
            budget = Decimal(spec.budget_usd)
        except InvalidOperation:
            raise InvalidRequest('budget_usd: a decimal number of dollars, e.g. "25.00"') from None
        if not budget.is_finite() or budget < 0:
            raise InvalidRequest("budget_usd: must be zero or more dollars")
    if spec.budget_window not in ("hour", "day", "month", "total"):
        raise InvalidRequest("budget_window: one of hour, day, month, total")
    if spec.expires_at is not None and spec.expires_at <= time.time():
        raise InvalidRequest("expires_at: lies in the past")


_COLUMNS = (
    "name, user_name, team, models, expires_at, budget_usd, budget_window, rpm, tpm, "
    "max_parallel, metadata, created_at, created_by, revoked_at, last4"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hybridfast_keys (name TEXT PRIMARY KEY, user_name TEXT, "
    "team TEXT, models TEXT NOT NULL, expires_at DOUBLE PRECISION, budget_usd TEXT, "
    "budget_window TEXT NOT NULL, rpm BIGINT, tpm BIGINT, max_parallel BIGINT, "
    "metadata TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, created_by TEXT NOT NULL, "
    "revoked_at DOUBLE PRECISION, last4 TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hybridfast_key_hashes (hash TEXT PRIMARY KEY, "
    "name TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS hybridfast_audit_log (id {serial}, "
    "at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
    "target TEXT NOT NULL, detail TEXT NOT NULL)",
)


def _row_to_record(row: Sequence[Any]) -> KeyRecord:
    (name, user, team, models, expires_at, budget, window, rpm, tpm, par, meta, created_at,
     created_by, revoked_at, last4) = row  # fmt: skip
    return KeyRecord(
        name=name,
        user=user,
        team=team,
        models=msgspec.json.decode(models),
        expires_at=expires_at,
        budget_usd=budget,
        budget_window=window,
        rpm=rpm,
        tpm=tpm,
        max_parallel=par,
        metadata=msgspec.json.decode(meta),
        created_at=created_at,
        created_by=created_by,
        revoked_at=revoked_at,
        last4=last4,
    )


class KeyStore:
    """The keys and the audit log in one database; safe to share between threads."""

    def __init__(self, db: Any, placeholder: str) -> None:
        self._db = db
        self._ph = placeholder
        self._lock = threading.Lock()

    @classmethod
    def open(cls, ledger: LedgerConfig) -> KeyStore:
        if ledger.backend == "postgres":
            return cls._open_postgres(ledger)
        path = ledger.sibling("keys") if ledger.backend == "sqlite" else ":memory:"
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"ledger.path: cannot open {path} for the key store ({exc})"
            ) from None
        store = cls(db, "?")
        store._create("INTEGER PRIMARY KEY AUTOINCREMENT")
        return store

    @classmethod
    def _open_postgres(cls, ledger: LedgerConfig) -> KeyStore:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "ledger.backend postgres needs psycopg",
                hint="pip install 'hybridfast[postgres]'",
            ) from None
        try:
            db = psycopg.connect(ledger.dsn or "", autocommit=True)
        except psycopg.OperationalError as exc:
            raise ConfigError(f"ledger.dsn: cannot connect for the key store ({exc})") from None
        db.execute(f'CREATE SCHEMA IF NOT EXISTS "{ledger.schema}"')
        db.execute(f'SET search_path TO "{ledger.schema}"')
        store = cls(db, "%s")
        store._create("BIGSERIAL PRIMARY KEY")
        return store

    def _create(self, serial: str) -> None:
        with self._tx() as cur:
            for statement in _SCHEMA:
                cur.execute(statement.format(serial=serial))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction under the store's lock (SQLite: BEGIN IMMEDIATE)."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE" if self._ph == "?" else "BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._ph)

    def _audit(
        self, cur: Any, actor: str, action: str, target: str, detail: dict[str, Any]
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO hybridfast_audit_log (at, actor, action, target, detail) "
                "VALUES (?, ?, ?, ?, ?)"
            ),
            (time.time(), actor, action, target, msgspec.json.encode(detail).decode()),
        )

    def record(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """An audit entry for an admin action outside the key store (budgets, cache, config)."""
        with self._tx() as cur:
            self._audit(cur, actor, action, target, detail)

    # --- admin actions (each one audited) ---------------------------------------------

    def create(self, spec: KeySpec, actor: str) -> tuple[KeyRecord, str]:
        """Stores a new key; returns it with the key itself (shown this once)."""
        key = new_key()
        record = KeyRecord(
            **msgspec.structs.asdict(spec), created_at=time.time(), created_by=actor, last4=key[-4:]
        )
        with self._tx() as cur:
            cur.execute(self._sql("SELECT 1 FROM hybridfast_keys WHERE name = ?"), (spec.name,))
            if cur.fetchone() is not None:
                raise InvalidRequest(
                    f"name: a key named {spec.name!r} exists",
                    code="ERR_KEY_EXISTS",
                    hint="rotate it, or revoke it and choose another name",
                )
            values = (
                record.name, record.user, record.team, msgspec.json.encode(record.models).decode(),
                record.expires_at, record.budget_usd, record.budget_window, record.rpm,
                record.tpm, record.max_parallel, msgspec.json.encode(record.metadata).decode(),
                record.created_at, record.created_by, None, record.last4,
            )  # fmt: skip
            marks = ", ".join("?" * len(values))
            cur.execute(
                self._sql(f"INSERT INTO hybridfast_keys ({_COLUMNS}) VALUES ({marks})"), values
            )
            cur.execute(
                self._sql("INSERT INTO hybridfast_key_hashes VALUES (?, ?, ?, NULL)"),
                (hash_key(key), spec.name, record.created_at),
            )
            detail = msgspec.to_builtins(spec)
            self._audit(cur, actor, "create", spec.name, detail)
        return record, key

    def rotate(self, name: str, grace_s: float, actor: str) -> tuple[KeyRecord, str]:
        """A new key for `name`; the keys it had keep working for `grace_s` seconds."""
        if grace_s < 0:
            raise InvalidRequest("grace_s: cannot be negative")
        key = new_key()
        now = time.time()
        with self._tx() as cur:
            record = self._get(cur, name)
            if record.revoked_at is not None:
                raise InvalidRequest(f"the key {name!r} is revoked", code="ERR_KEY_REVOKED")
            cur.execute(
                self._sql(
                    "UPDATE hybridfast_key_hashes SET expires_at = ? WHERE name = ? "
                    "AND (expires_at IS NULL OR expires_at > ?)"
                ),
                (now + grace_s, name, now + grace_s),
            )
            cur.execute(
                self._sql("INSERT INTO hybridfast_key_hashes VALUES (?, ?, ?, NULL)"),
                (hash_key(key), name, now),
            )
            cur.execute(
                self._sql("UPDATE hybridfast_keys SET last4 = ? WHERE name = ?"), (key[-4:], name)
            )
            self._audit(cur, actor, "rotate", name, {"grace_s": grace_s})
        return msgspec.structs.replace(record, last4=key[-4:]), key

    def revoke(self, name: str, actor: str) -> KeyRecord:
        now = time.time()
        with self._tx() as cur:
            record = self._get(cur, name)
            if record.revoked_at is None:
                cur.execute(
                    self._sql("UPDATE hybridfast_keys SET revoked_at = ? WHERE name = ?"),
                    (now, name),
                )
                cur.execute(self._sql("DELETE FROM hybridfast_key_hashes WHERE name = ?"), (name,))
                record = msgspec.structs.replace(record, revoked_at=now)
            self._audit(cur, actor, "revoke", name, {})
        return record

    # --- reading ----------------------------------------------------------------------

    def _get(self, cur: Any, name: str) -> KeyRecord:
        cur.execute(self._sql(f"SELECT {_COLUMNS} FROM hybridfast_keys WHERE name = ?"), (name,))
        row = cur.fetchone()
        if row is None:
            raise KeyNotFound(f"no key named {name!r}")
        return _row_to_record(row)

    def get(self, name: str) -> KeyRecord:
        with self._tx() as cur:
            return self._get(cur, name)

    def records(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._tx() as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM hybridfast_keys{where} ORDER BY created_at, name")
            return [_row_to_record(row) for row in cur.fetchall()]

    def lookup(self, key: str, now: float | None = None) -> KeyRecord | None:
        """The record of an active key, or None (unknown, revoked, expired, past grace)."""
        if not key.startswith(KEY_PREFIX):
            return None
        now = time.time() if now is None else now
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    f"SELECT {', '.join('k.' + c.strip() for c in _COLUMNS.split(','))} "
                    "FROM hybridfast_key_hashes h JOIN hybridfast_keys k ON k.name = h.name "
                    "WHERE h.hash = ? AND (h.expires_at IS NULL OR h.expires_at > ?)"
                ),
                (hash_key(key), now),
            )
            row = cur.fetchone()
        if row is None:
            return None
        record = _row_to_record(row)
        return record if record.active(now) else None

    def audit_log(self, limit: int = 100, target: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE target = ? ", (target, limit)) if target else ("", (limit,))
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    f"SELECT id, at, actor, action, target, detail FROM hybridfast_audit_log "
                    f"{where}ORDER BY id DESC LIMIT ?"
                ),
                args,
            )
            rows = cur.fetchall()
        return [
            {"id": r[0], "at": r[1], "actor": r[2], "action": r[3], "target": r[4],
             "detail": msgspec.json.decode(r[5])}
            for r in rows
        ]  # fmt: skip
