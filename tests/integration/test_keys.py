"""Virtual keys at run time against a real `python -m hybridfast serve` with a SQLite ledger:
create → use (the official openai SDK) → rotate (the old key works during the grace period)
→ revoke (401); the audit log; the key is never stored or logged; per-key models, limits and
budgets; bad admin input is a 4xx that changes nothing."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hybridfast.config import LedgerConfig
from hybridfast.security.keys import KeySpec, KeyStore, hash_key
from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.server import RunningServer, start_server

MASTER = "sk-hybridfast-test-master"
CONFIG_KEY = "sk-hybridfast-test-config-key"


@pytest.fixture
def server(fake_openai: FakeUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    text = fake_config(
        fake_openai,
        server=f"  master_key: {MASTER}",
        extra=(
            f"keys: [{{key: {CONFIG_KEY}, name: from-config}}]\n"
            "cache: {exact: {enabled: false}, semantic: {enabled: false}}\n"
        ),
    )
    # A real SQLite ledger file instead of fake_config's memory ledger.
    text = text.replace("  backend: memory", f"  path: '{tmp_path / 'ledger.db'}'")
    with start_server(text) as running:
        yield running


def admin(server: RunningServer, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        server.url + path,
        json=body,
        headers={"authorization": f"Bearer {MASTER}"},
        timeout=10,
    )


def ask(server: RunningServer, key: str, model: str = "chat") -> str | None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    return answer.choices[0].message.content


def test_create_use_rotate_revoke(server: RunningServer, tmp_path: Path) -> None:
    created = admin(server, "POST", "/admin/keys", {"name": "alice", "team": "red", "user": "al"})
    assert created.status_code == 201, created.text
    first = created.json()["key"]
    assert first.startswith("sk-hf-")
    assert len(first) > 40
    assert created.json()["key_hint"].endswith(first[-4:])
    assert ask(server, first)
    assert ask(server, CONFIG_KEY)  # config keys still work

    rotated = admin(server, "POST", "/admin/keys/alice/rotate", {"grace_s": 3600})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["key"]
    assert second != first
    assert ask(server, first)  # inside the grace period
    assert ask(server, second)

    rotated_now = admin(server, "POST", "/admin/keys/alice/rotate", {"grace_s": 0})
    third = rotated_now.json()["key"]
    for old in (first, second):
        with pytest.raises(openai.AuthenticationError):
            ask(server, old)
    assert ask(server, third)

    revoked = admin(server, "DELETE", "/admin/keys/alice")
    assert revoked.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(server, third)
    assert refused.value.status_code == 401
    assert admin(server, "GET", "/admin/keys").json()["keys"] == []
    listed = admin(server, "GET", "/admin/keys?include_revoked=true").json()["keys"]
    assert [k["name"] for k in listed] == ["alice"]
    assert "key" not in listed[0]

    audit = admin(server, "GET", "/admin/audit").json()["entries"]
    assert [e["action"] for e in audit] == ["revoke", "rotate", "rotate", "create"]
    assert all(e["target"] == "alice" and e["actor"].startswith("master@") for e in audit)
    assert audit[-1]["detail"]["team"] == "red"

    # Nothing that could authenticate is stored or logged: only SHA-256 digests.
    raw = (tmp_path / "ledger-keys.db").read_bytes()
    for key in (first, second, third):
        assert key.encode() not in raw
        assert key not in server.log()
        assert key not in str(audit)
    db = sqlite3.connect(tmp_path / "ledger-keys.db")
    hashes = {row[0] for row in db.execute("SELECT hash FROM hybridfast_key_hashes")}
    db.close()
    assert hashes == set()  # revoked: no digest left that could match


def test_per_key_models_rate_limit_and_budget(server: RunningServer) -> None:
    body = {"name": "bob", "models": ["chat"], "rpm": 2, "budget_usd": "5.00", "metadata": {"a": 1}}
    key = admin(server, "POST", "/admin/keys", body).json()["key"]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        ask(server, key, model="other")
    assert denied.value.body["code"] == "ERR_MODEL_NOT_ALLOWED"  # type: ignore[index]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    # The request refused for its model was refused before the limit counted it.
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert ask(server, key)
    with pytest.raises(openai.RateLimitError):
        ask(server, key)
    budgets = admin(server, "GET", "/admin/budgets").json()["budgets"]
    assert any(b["scope"] == "key" and b["name"] == "bob" for b in budgets)
    got = admin(server, "GET", "/admin/keys/bob").json()
    assert (got["rpm"], got["budget_usd"], got["metadata"]) == (2, "5.00", {"a": 1})


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        ({"name": "bad name!"}, "ERR_INVALID_REQUEST", 400),
        ({"name": "x", "rpm": 0}, "ERR_INVALID_REQUEST", 400),
        ({"name": "x", "budget_usd": "lots"}, "ERR_INVALID_REQUEST", 400),
        ({"name": "x", "expires_at": 1.0}, "ERR_INVALID_REQUEST", 400),
        ({"name": "x", "colour": "red"}, "ERR_INVALID_REQUEST", 400),
        ({"name": "from-config"}, "ERR_INVALID_REQUEST", 400),
        ({"name": "master"}, "ERR_INVALID_REQUEST", 400),
        ([1, 2], "ERR_INVALID_REQUEST", 400),
    ],
)
def test_bad_admin_input_is_refused_and_changes_nothing(
    server: RunningServer, body: Any, code: str, status: int
) -> None:
    resp = admin(server, "POST", "/admin/keys", body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert admin(server, "GET", "/admin/keys?include_revoked=true").json()["keys"] == []
    assert admin(server, "GET", "/admin/audit").json()["entries"] == []


def test_unknown_keys_and_non_master_callers(server: RunningServer) -> None:
    assert admin(server, "DELETE", "/admin/keys/nobody").status_code == 404
    assert admin(server, "POST", "/admin/keys/nobody/rotate", {}).status_code == 404
    key = admin(server, "POST", "/admin/keys", {"name": "carol"}).json()["key"]
    assert admin(server, "POST", "/admin/keys", {"name": "carol"}).status_code == 400
    as_carol = httpx.get(
        server.url + "/admin/keys", headers={"authorization": f"Bearer {key}"}, timeout=10
    )
    assert as_carol.status_code == 403
    with pytest.raises(openai.AuthenticationError):
        ask(server, "sk-hf-" + "x" * 43)


def test_store_expiry_and_grace_without_waiting(tmp_path: Path) -> None:
    store = KeyStore.open(LedgerConfig(path=str(tmp_path / "keys.db")))
    record, key = store.create(KeySpec(name="dave", expires_at=time.time() + 60), actor="test")
    assert store.lookup(key) == record
    assert store.lookup(key, now=time.time() + 120) is None  # expired
    _, new = store.rotate("dave", grace_s=30, actor="test")
    assert store.lookup(key) is not None
    assert store.lookup(key, now=time.time() + 31) is None  # grace over
    assert store.lookup(new, now=time.time() + 31) is not None
    assert store.lookup("not-a-key") is None
    db = sqlite3.connect(tmp_path / "keys-keys.db")
    digests = {row[0] for row in db.execute("SELECT hash FROM hybridfast_key_hashes")}
    db.close()
    assert digests == {hash_key(key), hash_key(new)}
    store.close()


@pytest.mark.postgres
def test_store_on_postgresql() -> None:
    import psycopg

    schema = f"hf_keys_{uuid.uuid4().hex[:12]}"
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    store = KeyStore.open(LedgerConfig(backend="postgres", dsn=dsn, schema=schema))
    try:
        record, key = store.create(KeySpec(name="erin", team="blue", rpm=5), actor="test")
        assert store.lookup(key) == record
        _, new = store.rotate("erin", grace_s=0, actor="test")
        assert store.lookup(key) is None
        assert store.lookup(new) is not None
        store.revoke("erin", actor="test")
        assert store.lookup(new) is None
        assert [e["action"] for e in store.audit_log()] == ["revoke", "rotate", "create"]
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_other_admin_actions_are_audited(server: RunningServer) -> None:
    budget = {"scope": "team", "name": "red", "window": "day", "limit_usd": "10"}
    assert admin(server, "PUT", "/admin/budgets", budget).status_code == 200
    assert (
        admin(server, "DELETE", "/admin/budgets?scope=team&name=red&window=day").status_code == 200
    )
    key = admin(server, "POST", "/admin/keys", {"name": "frank"}).json()["key"]
    refused = httpx.delete(
        server.url + "/admin/cache", headers={"authorization": f"Bearer {key}"}, timeout=10
    )
    assert refused.status_code == 403
    assert admin(server, "GET", "/admin/budgets").status_code == 200  # reads are not audited
    entries = admin(server, "GET", "/admin/audit").json()["entries"]
    assert [(e["action"], e["detail"].get("status")) for e in entries] == [
        ("DELETE /admin/cache", 403),
        ("create", None),
        ("DELETE /admin/budgets", 200),
        ("PUT /admin/budgets", 200),
    ]
    assert entries[0]["actor"].startswith("unauthenticated@")
    assert entries[2]["detail"]["query"] == {"scope": "team", "name": "red", "window": "day"}
    assert entries[3]["actor"].startswith("master@")
    assert key not in str(entries)
