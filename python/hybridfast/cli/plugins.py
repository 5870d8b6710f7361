"""`hybridfast plugins list`: every installed plugin (entry points of the groups
`hybridfast.routers`, `.guardrails`, `.callbacks`, `.providers`, `.cache_backends`), the
package that installed it, and whether it loads and has its group's interface; with
`--config`, also whether the provider and cache-backend plugins that config selects build."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson

from hybridfast.config import load_config
from hybridfast.experiments.plugins import GROUPS, build_selected, discover


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plugins", help="list installed plugins and whether they load")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every plugin of every group, loaded to check it")
    listing.add_argument("--group", choices=sorted(GROUPS), help="only this group")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--config",
        metavar="PATH",
        help="also build the provider and cache-backend plugins this config selects",
    )
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Exit 1 when a plugin does not load, or one the config selects does not build (a CI
    check for a deployment's image)."""
    found = discover((args.group,) if args.group else tuple(GROUPS))
    selected: list[dict[str, Any]] = []
    source = None
    if args.config:
        loaded = load_config(args.config)
        source = loaded.source
        selected = asyncio.run(build_selected(loaded.config))
    ok = all(i.loaded for i in found) and all(row["loaded"] for row in selected)
    if args.json:
        rows = [vars(i) for i in found]
        print(orjson.dumps({"installed": rows, "selected": selected} if source else rows).decode())
        return 0 if ok else 1
    for group in (args.group,) if args.group else GROUPS:
        mine = [i for i in found if i.group == group]
        print(f"{group}  ({GROUPS[group]})")
        for i in mine:
            state = "loaded" if i.loaded else f"FAILED: {i.error}"
            package = f"{i.package} {i.version}" if i.package else "?"
            print(f"  {i.name:<20} {i.value:<50} [{package}] {state}")
        if not mine:
            print("  (none installed)")
    if source is not None:
        print(f"selected by {source}")
        for row in selected:
            state = "built" if row["loaded"] else f"FAILED: {row['error']}"
            print(f"  {row['used_by']:<24} {row['name']:<20} {state}")
        if not selected:
            print("  (no provider or cache-backend plugin)")
    return 0 if ok else 1
