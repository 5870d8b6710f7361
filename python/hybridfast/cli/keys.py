"""`hybridfast keys create|list|get|rotate|revoke|audit`: virtual keys in the ledger's database.

These work on the database the config names (`ledger.path` / `ledger.dsn`), so they work
whether or not `serve` runs; a running gateway sees a new or rotated key at once and a
revoked one within two seconds. Each action is written to the audit log as `cli:<user>`.
The key is printed once, by `create` and `rotate`, and cannot be shown again.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from hybridfast.config import load_config
from hybridfast.errors import InvalidRequest
from hybridfast.security.keys import KeySpec, KeyStore, check_spec


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="create, list, rotate and revoke virtual API keys")
    # Every action takes these (`keys list --json`), so they are a parent of each.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config (its ledger section names the database)")
    common.add_argument("--json", action="store_true", help="print JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a key (printed once)", parents=[common])
    create.add_argument("name", help="the key's name: the tenant budgets and limits use")
    create.add_argument("--user")
    create.add_argument("--team")
    create.add_argument(
        "--model", action="append", default=[], help="a model or route it may call (repeat)"
    )
    create.add_argument("--expires-in", type=float, metavar="DAYS", help="valid for DAYS days")
    create.add_argument("--budget-usd", help="spending limit in dollars, e.g. 25.00")
    create.add_argument(
        "--budget-window", default="total", choices=["hour", "day", "month", "total"]
    )
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-parallel", type=int, help="concurrent requests")
    create.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")

    listing = actions.add_parser(
        "list", help="list keys (never the keys themselves)", parents=[common]
    )
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    get = actions.add_parser("get", help="one key's settings", parents=[common])
    get.add_argument("name")
    rotate = actions.add_parser(
        "rotate", help="a new key; the old one works for --grace", parents=[common]
    )
    rotate.add_argument("name")
    rotate.add_argument("--grace", type=float, default=0.0, metavar="SECONDS")
    revoke = actions.add_parser("revoke", help="revoke a key (401 from then on)", parents=[common])
    revoke.add_argument("name")
    audit = actions.add_parser("audit", help="the audit log, newest first", parents=[common])
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--target", help="only entries about this key")
    p.set_defaults(handler=run)


def _spec(args: argparse.Namespace) -> KeySpec:
    metadata: dict[str, Any] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--meta {item!r}: expected KEY=VALUE")
        metadata[key] = value
    expires = None if args.expires_in is None else time.time() + args.expires_in * 86_400
    return KeySpec(
        name=args.name,
        user=args.user,
        team=args.team,
        models=args.model,
        expires_at=expires,
        budget_usd=args.budget_usd,
        budget_window=args.budget_window,
        rpm=args.rpm,
        tpm=args.tpm,
        max_parallel=args.max_parallel,
        metadata=metadata,
    )


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_records(records: list[dict[str, Any]]) -> None:
    print(f"{'NAME':20} {'STATUS':8} {'KEY':14} {'USER':12} {'TEAM':12} {'EXPIRES':21} LIMITS")
    for r in records:
        limits = ", ".join(
            f"{k}={r[k]}" for k in ("rpm", "tpm", "max_parallel", "budget_usd") if r[k] is not None
        )
        print(
            f"{r['name']:20} {r['status']:8} {r['key_hint']:14} {r['user'] or '-':12} "
            f"{r['team'] or '-':12} {_when(r['expires_at']):21} {limits or '-'}"
        )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config).config
    actor = f"cli:{getpass.getuser()}"
    store = KeyStore.open(config.ledger)
    try:
        out: Any
        if args.action == "create":
            spec = _spec(args)
            check_spec(spec, [k.name for k in config.keys])
            record, key = store.create(spec, actor)
            out = {"key": key, **record.public()}
        elif args.action == "rotate":
            record, key = store.rotate(args.name, args.grace, actor)
            out = {"key": key, **record.public()}
        elif args.action == "revoke":
            out = store.revoke(args.name, actor).public()
        elif args.action == "get":
            out = store.get(args.name).public()
        elif args.action == "list":
            out = [r.public() for r in store.records(include_revoked=args.all)]
        else:
            out = store.audit_log(args.limit, args.target)
    finally:
        store.close()
    if args.json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.action == "list":
        _print_records(out)
    elif args.action == "audit":
        for e in out:
            print(f"{_when(e['at'])}  {e['actor']:24} {e['action']:8} {e['target']}  {e['detail']}")
    elif "key" in out:
        print(out["key"])
        print(
            f"{args.action}d key {out['name']!r}: store it now, it cannot be shown again",
            file=sys.stderr,
        )
    else:
        print(f"{out['name']}: {out['status']}")
    return 0
