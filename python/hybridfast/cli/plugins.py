"""`hybridfast plugins list`: every installed plugin (entry points of the groups
`hybridfast.routers`, `.guardrails`, `.callbacks`, `.providers`, `.cache_backends`), the
package that installed it, and whether it loads and has its group's interface."""

from __future__ import annotations

import argparse

import orjson

from hybridfast.experiments.plugins import GROUPS, discover


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plugins", help="list installed plugins and whether they load")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every plugin of every group, loaded to check it")
    listing.add_argument("--group", choices=sorted(GROUPS), help="only this group")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    """Exit 1 when a plugin does not load (a CI check for a deployment's image)."""
    found = discover((args.group,) if args.group else tuple(GROUPS))
    if args.json:
        print(orjson.dumps([vars(i) for i in found]).decode())
    else:
        for group in (args.group,) if args.group else GROUPS:
            mine = [i for i in found if i.group == group]
            print(f"{group}  ({GROUPS[group]})")
            for i in mine:
                state = "loaded" if i.loaded else f"FAILED: {i.error}"
                package = f"{i.package} {i.version}" if i.package else "?"
                print(f"  {i.name:<20} {i.value:<50} [{package}] {state}")
            if not mine:
                print("  (none installed)")
    return 0 if all(i.loaded for i in found) else 1
