"""`hybridfast serve`: run the HTTP gateway."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from hybridfast import discovery, redact, supervisor
from hybridfast.config import Config, load_config
from hybridfast.errors import ConfigError
from hybridfast.ledger.verify import startup_check
from hybridfast.observability import logs
from hybridfast.security import secrets


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
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object per line, with one line per request "
        "(default: observability.log_format, text)",
    )
    p.add_argument(
        "--workers",
        default="1",
        help="gateway processes on the port (SO_REUSEPORT), supervised: a number or 'auto' "
        "for one per core (default: 1)",
    )
    p.add_argument(
        "--env-file",
        help="an encrypted .env (`hybridfast secrets encrypt`) whose variables are set, where "
        "unset, before the config is read; passphrase from $HYBRIDFAST_ENV_PASSPHRASE or a "
        "prompt (default: $HYBRIDFAST_ENV_FILE)",
    )
    p.add_argument(
        "--env-key-file", help="the key file of --env-file (default: $HYBRIDFAST_ENV_KEY_FILE)"
    )
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (tls.cert)")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert (tls.key)")
    # Set by the supervisor for its workers: bind the port shared with the other workers.
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    # Every file serve creates (the ledger and its WAL, the request log, keys, stored
    # responses, cache snapshots) holds users' spend or prompts: owner-only, as PostgreSQL
    # does for its data directory. Workers inherit it.
    os.umask(0o077)
    secrets.load_for_serve(args.env_file, args.env_key_file)
    loaded = load_config(args.config)
    config = loaded.config
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.tls_cert or args.tls_key:
        config.tls.cert, config.tls.key = args.tls_cert, args.tls_key
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
    if getattr(args, "log_format", None):
        config.observability.log_format = args.log_format
    logs.configure(config.server.log_level, config.observability.log_format)
    redact.configure(redact.config_secrets(config))
    redact.install_log_scrubbing()
    for warning in loaded.warnings:
        logging.getLogger("hybridfast").warning(warning)
    if not getattr(args, "reuse_port", False):  # once, before workers open the ledger
        _check_ledger(config)
    if not is_loopback(config.server.host) and not config.server.master_key and not args.insecure:
        raise ConfigError(
            f"refusing to serve on {config.server.host} without a master key: anyone on the "
            "network could spend your provider credit",
            hint="set server.master_key (e.g. ${HYBRIDFAST_MASTER_KEY}), bind 127.0.0.1, "
            "or pass --insecure",
        )
    workers = supervisor.resolve_workers(args.workers)
    if workers > 1:
        supervisor.check_shared_state(config, workers)
        argv = sys.argv[sys.argv.index("serve") + 1 :] if "serve" in sys.argv else []
        return supervisor.Supervisor(argv, workers).run()
    config, watch = _with_discovered_models(config, zero_config=loaded.source == "<defaults>")
    from hybridfast.server.app import run_app

    run_app(config, source=loaded.source, reuse_port=args.reuse_port, discovery=watch)
    print("hybridfast: stopped", file=sys.stderr)
    return 0


def _with_discovered_models(
    config: Config, *, zero_config: bool
) -> tuple[Config, discovery.Rediscovery | None]:
    """Without a config file, the local model servers that answer now join the
    environment's defaults (at most ~1 s of probing), and a watcher keeps probing for
    servers that start later. Either way, one line says what chat can use — or that nothing
    can, and how to fix it."""
    found: list[discovery.FoundServer] = []
    watch = None
    probed = zero_config and discovery.enabled()
    if probed:
        base = config
        found = discovery.discover_blocking(skip_ports={config.server.port})
        config = discovery.apply(base, found)
        watch = discovery.Rediscovery(base, found, skip_ports={config.server.port})
    line = discovery.startup_line(config, found, probed=probed)
    level = logging.INFO if discovery.chat_model_names(config) else logging.WARNING
    logging.getLogger("hybridfast").log(level, "hybridfast: %s", line)
    return config, watch


def _check_ledger(config: Config) -> None:
    """Runs before anything opens the SQLite ledger (opening it replays the log, and what a
    damaged log loses is then gone): damage is logged loudly, and the gateway still serves."""
    if config.ledger.backend != "sqlite":
        return
    problems = startup_check(config.ledger.path)
    log = logging.getLogger("hybridfast.ledger")
    for line in problems:
        log.error("LEDGER DAMAGED: %s", line)
    if problems:
        log.error(
            "LEDGER DAMAGED: records in the damaged part will be missing from reports and "
            "budgets; `hybridfast ledger verify` re-checks, docs/security.md says what to do"
        )
