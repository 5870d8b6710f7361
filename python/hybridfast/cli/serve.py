"""`hybridfast serve`: run the HTTP gateway."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from hybridfast.config import load_config
from hybridfast.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the OpenAI- and Anthropic-compatible HTTP gateway")
    p.add_argument(
        "--config",
        help="YAML config (default: $HYBRIDFAST_CONFIG, ./hybridfast.yaml, "
        "else built-in defaults from the environment)",
    )
    p.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default: server.port, 8080)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address without a master key",
    )
    p.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    config = loaded.config
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for warning in loaded.warnings:
        logging.getLogger("hybridfast").warning(warning)
    if not is_loopback(config.server.host) and not config.server.master_key and not args.insecure:
        raise ConfigError(
            f"refusing to serve on {config.server.host} without a master key: anyone on the "
            "network could spend your provider credit",
            hint="set server.master_key (e.g. ${HYBRIDFAST_MASTER_KEY}), bind 127.0.0.1, "
            "or pass --insecure",
        )
    from hybridfast.server.app import run_app

    run_app(config, source=loaded.source)
    print("hybridfast: stopped", file=sys.stderr)
    return 0
