"""Secrets outside the config file: the OS keyring and an encrypted `.env`.

Keyring: secrets live under the service `hybridfast` (what `${keyring:NAME}` in the config
reads). Keyrings cannot list their entries, so the names are also kept, without values, in
an entry `__names__` for `hybridfast secrets list`.

Encrypted `.env`: AES-256-GCM (authenticated: a changed byte or a wrong key is refused, never
decrypted into garbage). The key is derived from a passphrase with scrypt (n=2^15, r=8, p=1,
a random 16-byte salt per file), or is the 32 bytes of a key file (`hybridfast secrets
keygen`). The file is JSON: the format, KDF and its parameters, salt and nonce are
authenticated as associated data, so none of them can be swapped.
"""

from __future__ import annotations

import base64
import getpass
import os
import re
import secrets
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import msgspec

from hybridfast.config import KEYRING_SERVICE
from hybridfast.errors import ConfigError, GatewayError

FORMAT = "hybridfast-encrypted-env"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_NAMES = "__names__"
NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class SecretsError(GatewayError):
    code, status = "ERR_SECRETS", 400
    hint = "see docs/security-governance.md, Secrets"


# --- keyring ------------------------------------------------------------------------------


def _keyring() -> Any:
    try:
        import keyring
    except ImportError:
        raise SecretsError(
            "the OS keyring needs the keyring package", hint="pip install 'hybridfast[secrets]'"
        ) from None
    return keyring


def _check_name(name: str) -> None:
    if not NAME.match(name) or name == _NAMES:
        raise SecretsError(f"{name!r} is not a secret name", hint="letters, digits and _ . - /")


def _names(kr: Any) -> list[str]:
    raw = kr.get_password(KEYRING_SERVICE, _NAMES)
    return sorted(msgspec.json.decode(raw)) if raw else []


def keyring_set(name: str, value: str) -> None:
    _check_name(name)
    kr = _keyring()
    kr.set_password(KEYRING_SERVICE, name, value)
    names = set(_names(kr)) | {name}
    kr.set_password(KEYRING_SERVICE, _NAMES, msgspec.json.encode(sorted(names)).decode())


def keyring_get(name: str) -> str:
    _check_name(name)
    value = _keyring().get_password(KEYRING_SERVICE, name)
    if value is None:
        raise SecretsError(f"no secret {name!r} in the keyring", code="ERR_NOT_FOUND")
    return str(value)


def keyring_list() -> list[str]:
    return _names(_keyring())


def keyring_delete(name: str) -> None:
    _check_name(name)
    kr = _keyring()
    try:
        kr.delete_password(KEYRING_SERVICE, name)
    except kr.errors.PasswordDeleteError:
        raise SecretsError(f"no secret {name!r} in the keyring", code="ERR_NOT_FOUND") from None
    names = [n for n in _names(kr) if n != name]
    kr.set_password(KEYRING_SERVICE, _NAMES, msgspec.json.encode(names).decode())


# --- encrypted .env -------------------------------------------------------------------------


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    kdf: str  # "scrypt" or "keyfile"
    salt: str
    nonce: str
    ciphertext: str
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def aad(self) -> bytes:
        parts = (self.format, self.version, self.kdf, self.n, self.r, self.p, self.salt, self.nonce)
        return "|".join(str(part) for part in parts).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_key_file(path: str | Path) -> bytes:
    """32 bytes, stored raw or as base64 text."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the key file ({exc.strerror})") from None
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SecretsError(f"{path}: a key file holds 32 bytes (raw or base64)")
    return key


def write_key_file(path: str | Path) -> None:
    """A new random key, base64, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_b64(secrets.token_bytes(32)) + "\n")


def _derive(envelope: _Envelope, passphrase: str | None, key: bytes | None) -> bytes:
    if envelope.kdf == "keyfile":
        if key is None:
            raise SecretsError("this file was encrypted with a key file: give --key-file")
        return key
    if passphrase is None:
        raise SecretsError("this file was encrypted with a passphrase: give the passphrase")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(
        salt=base64.b64decode(envelope.salt), length=32, n=envelope.n, r=envelope.r, p=envelope.p
    )
    return kdf.derive(passphrase.encode())


def encrypt(plaintext: bytes, *, passphrase: str | None = None, key: bytes | None = None) -> bytes:
    """The encrypted file's bytes; exactly one of `passphrase` and `key`."""
    if (passphrase is None) == (key is None):
        raise SecretsError("give a passphrase or a key file (one of them)")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    envelope = _Envelope(
        format=FORMAT,
        version=1,
        kdf="scrypt" if passphrase is not None else "keyfile",
        salt=_b64(secrets.token_bytes(16)),
        nonce=_b64(secrets.token_bytes(12)),
        ciphertext="",
    )
    secret = _derive(envelope, passphrase, key)
    sealed = AESGCM(secret).encrypt(base64.b64decode(envelope.nonce), plaintext, envelope.aad())
    envelope.ciphertext = _b64(sealed)
    return msgspec.json.format(msgspec.json.encode(envelope), indent=2) + b"\n"


def decrypt(data: bytes, *, passphrase: str | None = None, key: bytes | None = None) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        envelope = msgspec.json.decode(data, type=_Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SecretsError("not a hybridfast encrypted env file") from None
    if (
        envelope.format != FORMAT
        or envelope.version != 1
        or envelope.kdf not in ("scrypt", "keyfile")
    ):
        raise SecretsError("not a hybridfast encrypted env file (format or version)")
    secret = _derive(envelope, passphrase, key)
    try:
        return AESGCM(secret).decrypt(
            base64.b64decode(envelope.nonce), base64.b64decode(envelope.ciphertext), envelope.aad()
        )
    except (InvalidTag, ValueError):
        raise SecretsError(
            "cannot decrypt: wrong passphrase or key, or the file was changed",
            hint="the encryption is authenticated: nothing was decrypted",
        ) from None


def parse_env(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines (`export ` allowed, `#` comments, single or double quotes)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise SecretsError(f"line {number}: expected KEY=VALUE")
        name, value = m.group(1), m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[name] = value
    return values


def load_encrypted_env(
    path: str | Path,
    environ: MutableMapping[str, str],
    *,
    passphrase: str | None = None,
    key: bytes | None = None,
) -> list[str]:
    """Decrypts `path` and sets its variables in `environ` where they are not set already
    (the real environment wins). Returns the names it set."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the encrypted env file ({exc.strerror})") from None
    values = parse_env(decrypt(data, passphrase=passphrase, key=key).decode())
    set_names = [k for k in values if k not in environ]
    for name in set_names:
        environ[name] = values[name]
    return set_names


def env_file_from(environ: Mapping[str, str]) -> tuple[str | None, str | None, bytes | None]:
    """`HYBRIDFAST_ENV_FILE` with `HYBRIDFAST_ENV_PASSPHRASE` or `HYBRIDFAST_ENV_KEY_FILE`."""
    path = environ.get("HYBRIDFAST_ENV_FILE") or None
    key_file = environ.get("HYBRIDFAST_ENV_KEY_FILE") or None
    key = read_key_file(key_file) if key_file else None
    return path, environ.get("HYBRIDFAST_ENV_PASSPHRASE"), key


def load_for_serve(
    path: str | None, key_file: str | None, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """What `serve` does before reading its config: the encrypted env file of `--env-file`
    or `$HYBRIDFAST_ENV_FILE`, with the key file of `--env-key-file` /
    `$HYBRIDFAST_ENV_KEY_FILE`, else the passphrase `$HYBRIDFAST_ENV_PASSPHRASE`, else one
    typed at a prompt. Workers started by `serve --workers` inherit the result."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("HYBRIDFAST_ENV_FILE") or None
    if not path or environ.get(_LOADED) == path:
        return []
    key_file = key_file or environ.get("HYBRIDFAST_ENV_KEY_FILE") or None
    key = read_key_file(key_file) if key_file else None
    passphrase = environ.get("HYBRIDFAST_ENV_PASSPHRASE")
    if key is None and passphrase is None and sys.stdin.isatty():
        passphrase = getpass.getpass(f"passphrase for {path}: ")
    names = load_encrypted_env(path, environ, passphrase=passphrase, key=key)
    environ[_LOADED] = path
    return names


_LOADED = "HYBRIDFAST_ENV_FILE_LOADED"
