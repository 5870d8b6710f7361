"""`python -m hybridfast` / `hybridfast`: one subcommand per module in this package.

Each subcommand module exposes `add_parser(subparsers)`, which registers its parser and sets
`handler` (a function taking the parsed args and returning an exit code). Errors print one
line with a code and a hint, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hybridfast import __version__
from hybridfast._core import HybridfastError
from hybridfast.errors import GatewayError


def build_parser() -> argparse.ArgumentParser:
    from hybridfast.cli import config_cmd, serve, version

    parser = argparse.ArgumentParser(
        prog="hybridfast",
        description="A hybrid AI gateway: one OpenAI- and Anthropic-compatible endpoint over "
        "local and cloud models.",
    )
    parser.add_argument("--version", action="version", version=f"hybridfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, config_cmd, version):
        module.add_parser(sub)
    for name in _OPTIONAL_COMMANDS:
        # Commands that arrive with later parts of the gateway register themselves the same way.
        try:
            module = __import__(f"hybridfast.cli.{name}", fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != f"hybridfast.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


_OPTIONAL_COMMANDS = (
    "route",
    "ledger",
    "cache",
    "embed",
    "gpus",
    "keys",
    "secrets",
    "harden",
    "prompts",
    "plugins",
    "finetune",
    "experiments",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except GatewayError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    except HybridfastError as exc:
        code = exc.code
        print(f"error {code}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
