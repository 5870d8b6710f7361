"""`hybridfast ledger report | export | budgets | verify`: read the ledger `serve` writes.

They open the store named by the same config as `serve` (read-only for SQLite, so they work
while the server runs) and rebuild the books from it, exactly as `serve` does on start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hybridfast._core import format_usd
from hybridfast.config import Config, load_config
from hybridfast.errors import ConfigError
from hybridfast.ledger import load_books, report
from hybridfast.ledger.budgets import BudgetState
from hybridfast.ledger.stores import COLUMNS, Store, open_store
from hybridfast.ledger.verify import verify


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="spend reports, record export and budgets")
    p.add_argument("--config", help="the config `serve` uses (default: as `serve` finds it)")
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    rep = ledger_sub.add_parser("report", help="spend grouped by model, key, team, day, ...")
    rep.add_argument("--by", choices=report.BY, default="model")
    rep.add_argument("--since", help="2025-11-01, 2025-11-01T10:00, or 24h / 7d ago")
    rep.add_argument("--until", help="same forms as --since (exclusive)")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON lines, one per row")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header")
    rep.set_defaults(handler=run_report)
    _config_option(rep)

    exp = ledger_sub.add_parser("export", help="every record, request ids included")
    exp.add_argument("--since")
    exp.add_argument("--until")
    exp.add_argument("--parent-id", help="only the steps of one prompt chain (its request id)")
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    exp.add_argument("--output", "-o", help="a file (default: standard output)")
    exp.set_defaults(handler=run_export)
    _config_option(exp)

    bud = ledger_sub.add_parser("budgets", help="each budget: limit, spent, what is left")
    bud.add_argument("--json", action="store_true")
    bud.set_defaults(handler=run_budgets)
    _config_option(bud)

    ver = ledger_sub.add_parser(
        "verify", help="check the SQLite ledger's log and file; exit 1 on damage"
    )
    ver.set_defaults(handler=run_verify)
    _config_option(ver)


def _config_option(parser: argparse.ArgumentParser) -> None:
    # Also after the action (`ledger report --config X`); SUPPRESS keeps the one given before.
    parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _config(args: argparse.Namespace) -> Config:
    loaded = load_config(getattr(args, "config", None))
    return loaded.config


@contextlib.contextmanager
def _store(config: Config) -> Iterator[Store]:
    lc = config.ledger
    if lc.backend == "memory":
        raise ConfigError(
            "ledger.backend is memory: nothing is stored to report on",
            hint="set ledger.backend to sqlite or postgres",
        )
    if lc.backend == "sqlite" and not Path(lc.path).exists():
        raise ConfigError(
            f"no ledger at {lc.path} (ledger.path)",
            hint="run `serve` with this config first, or pass --config",
        )
    store = open_store(lc, read_only=True)
    assert store is not None
    try:
        yield store
    finally:
        store.close()


def run_report(args: argparse.Namespace) -> int:
    config = _config(args)
    since, until = report.parse_time(args.since), report.parse_time(args.until)
    with _store(config) as store:
        books, _ = load_books(config, store)
    records = report.rows(books, args.by, since, until)
    if args.json:
        for r in records:
            print(json.dumps(r))
    elif args.csv:
        sys.stdout.write(report.to_csv(records))
    else:
        print(report.to_table(records, args.by) if records else "no spend recorded")
    return 0


def run_export(args: argparse.Namespace) -> int:
    config = _config(args)
    since, until = report.parse_time(args.since), report.parse_time(args.until)
    with _store(config) as store, _output(args.output) as out:
        entries = store.export(since, until, args.parent_id)
        if args.format == "csv":
            import csv

            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(COLUMNS)
            for e in entries:
                writer.writerow([e[c] for c in COLUMNS])
        else:
            for e in entries:
                out.write(json.dumps(_readable(e)) + "\n")
    return 0


def _readable(entry: dict[str, Any]) -> dict[str, Any]:
    entry["cost_usd"] = format_usd(entry["cost"])
    entry["estimated"] = bool(entry["estimated"])
    return entry


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        yield f


def run_budgets(args: argparse.Namespace) -> int:
    config = _config(args)
    lc = config.ledger
    stored = lc.backend == "postgres" or (lc.backend == "sqlite" and Path(lc.path).exists())
    with _store(config) if stored else contextlib.nullcontext() as store:
        books, budgets = load_books(config, store)
    states = [
        BudgetState(b, int(start), int(spent), int(reserved))
        for b, (_, _, _, _, _, start, spent, reserved) in zip(budgets, books.budgets(), strict=True)
    ]
    if args.json:
        print(json.dumps([s.as_json() for s in states], indent=2))
        return 0
    if not states:
        print("no budgets configured")
        return 0
    width = max(len(s.budget.label) for s in states)
    for s in states:
        print(
            f"{s.budget.label.ljust(width)}  spent ${format_usd(s.spent)} of "
            f"${format_usd(s.budget.limit)}, ${format_usd(s.remaining)} left"
        )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """The write-ahead log first (records a damaged frame would drop), then
    `PRAGMA quick_check`. Safe while `serve` runs: nothing is written."""
    lc = _config(args).ledger
    if lc.backend != "sqlite":
        print(f"ledger.backend is {lc.backend}: verify checks SQLite ledgers only")
        return 0
    if not Path(lc.path).exists():
        raise ConfigError(
            f"no ledger at {lc.path} (ledger.path)",
            hint="run `serve` with this config first, or pass --config",
        )
    wal, problems = verify(lc.path)
    problems = wal.problems + problems
    for line in problems:
        print(f"DAMAGED {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {lc.path} passes quick_check; its log has {wal.frames} intact frame(s)")
    return 0
