"""`hybridfast secrets set|get|list|delete` (the OS keyring, read by `${keyring:NAME}` in the
config) and `hybridfast secrets encrypt|decrypt|keygen` (an encrypted `.env` that
`serve --env-file` loads at start)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from hybridfast.security import secrets as S


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("secrets", help="keyring secrets and encrypted .env files")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = actions.add_parser("set", help="store a secret in the OS keyring")
    put.add_argument("name")
    put.add_argument(
        "--value-stdin", action="store_true", help="read the value from stdin (else a prompt)"
    )
    get = actions.add_parser("get", help="print a secret from the OS keyring")
    get.add_argument("name")
    actions.add_parser("list", help="names of the stored secrets (never values)")
    delete = actions.add_parser("delete", help="remove a secret from the OS keyring")
    delete.add_argument("name")
    for name, help_text in (
        ("encrypt", "encrypt a .env file (AES-256-GCM)"),
        ("decrypt", "decrypt an encrypted .env file"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("input")
        action.add_argument("-o", "--output", help="where to write (default: stdout)")
        action.add_argument(
            "--key-file", help="a key file (`secrets keygen`) instead of a passphrase"
        )
    keygen = actions.add_parser("keygen", help="write a new random key file (mode 0600)")
    keygen.add_argument("output")
    p.set_defaults(handler=run)


def _passphrase(confirm: bool) -> str:
    from_env = os.environ.get("HYBRIDFAST_ENV_PASSPHRASE")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise S.SecretsError(
            "no passphrase: set HYBRIDFAST_ENV_PASSPHRASE or run in a terminal",
            hint="or use --key-file",
        )
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise S.SecretsError("the passphrases differ")
    if len(first) < 8:
        raise S.SecretsError("a passphrase needs at least 8 characters")
    return first


def _write(data: bytes, output: str | None, private: bool) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        return
    # Plain secrets and ciphertext alike are written for the owner only.
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(output, 0o600 if private else 0o644)


def _crypt(args: argparse.Namespace) -> int:
    try:
        data = Path(args.input).read_bytes()
    except OSError as exc:
        raise S.SecretsError(f"{args.input}: cannot read ({exc.strerror})") from None
    key = S.read_key_file(args.key_file) if args.key_file else None
    secret = None if key is not None else _passphrase(confirm=args.action == "encrypt")
    if args.action == "encrypt":
        S.parse_env(data.decode())  # refuse a file serve could not load later
        _write(S.encrypt(data, passphrase=secret, key=key), args.output, private=True)
    else:
        _write(S.decrypt(data, passphrase=secret, key=key), args.output, private=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "set":
        value = sys.stdin.read().rstrip("\n") if args.value_stdin else getpass.getpass("value: ")
        if not value:
            raise S.SecretsError("an empty secret was not stored")
        S.keyring_set(args.name, value)
        print(f"stored {args.name!r}; use ${{keyring:{args.name}}} in the config", file=sys.stderr)
    elif args.action == "get":
        print(S.keyring_get(args.name))
    elif args.action == "list":
        for name in S.keyring_list():
            print(name)
    elif args.action == "delete":
        S.keyring_delete(args.name)
        print(f"deleted {args.name!r}", file=sys.stderr)
    elif args.action == "keygen":
        try:
            S.write_key_file(args.output)
        except FileExistsError:
            raise S.SecretsError(f"{args.output} exists; a key file is never overwritten") from None
        print(
            f"wrote {args.output} (mode 0600): keep it apart from the encrypted file",
            file=sys.stderr,
        )
    else:
        return _crypt(args)
    return 0
