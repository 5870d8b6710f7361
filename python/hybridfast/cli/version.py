"""`hybridfast version`: the package and native core versions."""

from __future__ import annotations

import argparse
import platform

from hybridfast import __version__, _core


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", help="print the versions of hybridfast and its native core")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(
        f"hybridfast {__version__} (core {_core.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()})"
    )
    return 0
