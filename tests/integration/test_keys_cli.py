"""`hybridfast keys ...` on a real SQLite ledger file: the key is printed once, lists never
show it, rotation and revocation take effect in the store, and every action is audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridfast.cli import main
from hybridfast.config import LedgerConfig
from hybridfast.security.keys import KeyStore


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "hybridfast.yaml"
    path.write_text(
        f"ledger: {{path: '{tmp_path / 'ledger.db'}'}}\nkeys: [{{key: sk-config-1, name: ops}}]\n"
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lifecycle(config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "keys", "create", "--config", config, "alice", "--team", "red", "--rpm", "10",
        "--model", "chat", "--meta", "owner=al", "--expires-in", "30",
    )  # fmt: skip
    assert code == 0
    key = out.strip()
    assert key.startswith("sk-hf-")
    assert "cannot be shown again" in err
    store = KeyStore.open(LedgerConfig(path=str(tmp_path / "ledger.db")))
    record = store.lookup(key)
    assert record is not None
    assert (record.team, record.rpm, record.models, record.metadata) == (
        "red", 10, ["chat"], {"owner": "al"},
    )  # fmt: skip

    code, out, _ = run(capsys, "keys", "list", "--config", config)
    assert "alice" in out
    assert key not in out
    assert key[-4:] in out

    code, out, _ = run(capsys, "keys", "rotate", "--config", config, "alice", "--grace", "60")
    new = out.strip()
    assert store.lookup(key) is not None  # grace period
    assert store.lookup(new) is not None

    code, out, _ = run(capsys, "keys", "revoke", "--config", config, "alice")
    assert out.strip() == "alice: revoked"
    assert store.lookup(new) is None
    assert store.lookup(key) is None

    code, out, _ = run(capsys, "keys", "audit", "--config", config, "--json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == ["revoke", "rotate", "create"]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert key not in out
    assert new not in out
    store.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "ops"], "taken by a key in the config"),
        (["create", "x", "--rpm", "0"], "rpm: must be at least 1"),
        (["create", "x", "--meta", "novalue"], "KEY=VALUE"),
        (["rotate", "ghost"], "ERR_KEY_NOT_FOUND"),
        (["revoke", "ghost"], "ERR_KEY_NOT_FOUND"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    config: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "keys", *argv, "--config", config)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    code, out, _ = run(capsys, "keys", "audit", "--config", config, "--json")
    assert json.loads(out) == []
