"""Secrets: `${keyring:NAME}` in the config and `hybridfast secrets set|get|list|delete` over a
file-backed keyring backend (the real `keyring` library, a backend of its plugin interface),
the encrypted .env (AES-256-GCM; passphrase or key file) round trip and its refusals, and a
real `serve` that reads its master key from the keyring and its upstream key from an
encrypted .env."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import openai
import pytest

from hybridfast.cli import main
from hybridfast.config import parse_config
from hybridfast.errors import ConfigError
from hybridfast.security import secrets as S
from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.server import REPO, start_server

PASSPHRASE = "correct horse battery staple"


class FileKeyring(keyring.backend.KeyringBackend):
    """A keyring in a JSON file named by $HYBRIDFAST_TEST_KEYRING (for tests and for the
    serve subprocess, which finds it through $PYTHON_KEYRING_BACKEND)."""

    priority = 1  # type: ignore[assignment]

    def _load(self) -> dict[str, str]:
        path = Path(os.environ["HYBRIDFAST_TEST_KEYRING"])
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, data: dict[str, str]) -> None:
        Path(os.environ["HYBRIDFAST_TEST_KEYRING"]).write_text(json.dumps(data))

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise keyring.errors.PasswordDeleteError(username)
        self._save(data)


@pytest.fixture
def file_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "keyring.json"
    monkeypatch.setenv("HYBRIDFAST_TEST_KEYRING", str(path))
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())
    yield path
    keyring.set_keyring(previous)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- keyring ------------------------------------------------------------------------------------


def test_secrets_cli_round_trip(
    file_keyring: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cr3t-value\n"))
    assert cli(capsys, "secrets", "set", "openai", "--value-stdin")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("other\n"))
    cli(capsys, "secrets", "set", "anthropic", "--value-stdin")
    assert cli(capsys, "secrets", "get", "openai")[1] == "s3cr3t-value\n"
    code, out, _ = cli(capsys, "secrets", "list")
    assert out.split() == ["anthropic", "openai"]
    assert "s3cr3t" not in out
    cli(capsys, "secrets", "delete", "openai")
    assert cli(capsys, "secrets", "list")[1].split() == ["anthropic"]
    code, _, err = cli(capsys, "secrets", "get", "openai")
    assert code == 2
    assert "no secret 'openai'" in err
    code, _, err = cli(capsys, "secrets", "delete", "openai")
    assert code == 2


def test_keyring_reference_in_config(file_keyring: Path) -> None:
    S.keyring_set("master", "sk-from-the-keyring-${HOME}")
    config = parse_config(
        "server:\n  master_key: ${keyring:master}\n", "hybridfast.yaml", env={"HOME": "/x"}
    ).config
    # The value comes verbatim: a `${...}` inside a keyring secret is not expanded again.
    assert config.server.master_key == "sk-from-the-keyring-${HOME}"
    with pytest.raises(ConfigError, match=r"hybridfast.yaml:3: server.metrics_key: no secret"):
        parse_config(
            "server:\n  master_key: ${keyring:master}\n  metrics_key: ${keyring:absent}\n",
            "hybridfast.yaml",
        )


# --- encrypted .env ------------------------------------------------------------------------------

ENV_TEXT = b"# upstreams\nexport OPENAI_API_KEY=sk-abc123\nQUOTED='a b # c'\nPLAIN=x # note\n"


def test_encrypt_decrypt_round_trip_with_passphrase_and_key_file(tmp_path: Path) -> None:
    sealed = S.encrypt(ENV_TEXT, passphrase=PASSPHRASE)
    assert b"sk-abc123" not in sealed
    assert S.decrypt(sealed, passphrase=PASSPHRASE) == ENV_TEXT
    S.write_key_file(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    key = S.read_key_file(tmp_path / "k")
    assert S.decrypt(S.encrypt(ENV_TEXT, key=key), key=key) == ENV_TEXT
    assert S.parse_env(ENV_TEXT.decode()) == {
        "OPENAI_API_KEY": "sk-abc123",
        "QUOTED": "a b # c",
        "PLAIN": "x",
    }


def test_wrong_key_or_changed_file_is_refused() -> None:
    sealed = S.encrypt(ENV_TEXT, passphrase=PASSPHRASE)
    with pytest.raises(S.SecretsError, match="wrong passphrase or key, or the file was changed"):
        S.decrypt(sealed, passphrase="not the passphrase")
    envelope = json.loads(sealed)
    for field, value in (("n", 2**14), ("salt", "AAAAAAAAAAAAAAAAAAAAAA=="), ("kdf", "keyfile")):
        tampered = json.dumps({**envelope, field: value}).encode()
        with pytest.raises(S.SecretsError):
            S.decrypt(tampered, passphrase=PASSPHRASE, key=b"k" * 32)
    cipher = bytearray(json.loads(sealed)["ciphertext"].encode())
    cipher[5] = ord("A") if cipher[5] != ord("A") else ord("B")
    flipped = json.dumps({**envelope, "ciphertext": cipher.decode()}).encode()
    with pytest.raises(S.SecretsError):
        S.decrypt(flipped, passphrase=PASSPHRASE)
    with pytest.raises(S.SecretsError, match="not a hybridfast encrypted env file"):
        S.decrypt(b"OPENAI_API_KEY=x", passphrase=PASSPHRASE)


def test_cli_encrypt_decrypt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_bytes(ENV_TEXT)
    monkeypatch.setenv("HYBRIDFAST_ENV_PASSPHRASE", PASSPHRASE)
    enc, dec = tmp_path / ".env.enc", tmp_path / ".env.out"
    assert cli(capsys, "secrets", "encrypt", str(tmp_path / ".env"), "-o", str(enc))[0] == 0
    assert stat.S_IMODE(enc.stat().st_mode) == 0o600
    assert cli(capsys, "secrets", "decrypt", str(enc), "-o", str(dec))[0] == 0
    assert dec.read_bytes() == ENV_TEXT
    (tmp_path / "bad.env").write_text("this is not a dotenv line\n")
    code, _, err = cli(capsys, "secrets", "encrypt", str(tmp_path / "bad.env"))
    assert code == 2
    assert "line 1: expected KEY=VALUE" in err


def test_load_sets_only_unset_variables(tmp_path: Path) -> None:
    path = tmp_path / ".env.enc"
    path.write_bytes(S.encrypt(ENV_TEXT, passphrase=PASSPHRASE))
    environ = {"PLAIN": "from the real environment", "HYBRIDFAST_ENV_PASSPHRASE": PASSPHRASE}
    assert S.load_for_serve(str(path), None, environ) == ["OPENAI_API_KEY", "QUOTED"]
    assert environ["PLAIN"] == "from the real environment"
    assert environ["OPENAI_API_KEY"] == "sk-abc123"
    assert S.load_for_serve(str(path), None, environ) == []  # once (workers inherit it)


# --- serve ---------------------------------------------------------------------------------------


def test_serve_reads_keyring_and_encrypted_env(
    fake_openai: FakeUpstream, file_keyring: Path, tmp_path: Path
) -> None:
    S.keyring_set("master", "sk-master-from-keyring")
    key_file = tmp_path / "env.key"
    S.write_key_file(key_file)
    enc = tmp_path / ".env.enc"
    enc.write_bytes(
        S.encrypt(b"UPSTREAM_KEY=sk-upstream-from-env\n", key=S.read_key_file(key_file))
    )
    text = fake_config(fake_openai, server="  master_key: ${keyring:master}")
    text = text.replace("api_key: test-key-0", "api_key: ${UPSTREAM_KEY}")
    env = {
        "PYTHONPATH": str(REPO),
        "PYTHON_KEYRING_BACKEND": "tests.unit.test_secrets.FileKeyring",
        "HYBRIDFAST_TEST_KEYRING": str(file_keyring),
    }
    args = ("--env-file", str(enc), "--env-key-file", str(key_file))
    with start_server(text, env, args=args) as server:
        client = openai.OpenAI(
            base_url=server.url + "/v1", api_key="sk-master-from-keyring", max_retries=0
        )
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        log = server.log()
    assert fake_openai.requests[-1].headers["Authorization"] == "Bearer sk-upstream-from-env"
    assert "sk-upstream-from-env" not in log
    assert "sk-master-from-keyring" not in log
