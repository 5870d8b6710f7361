"""The CLI's client of a running gateway's admin API (`cache stats`, `experiments results`...).

The address and master key come from the same config `serve` reads (`server.host`,
`server.port`, `server.master_key`); `--url`, `--master-key` or `$HYBRIDFAST_MASTER_KEY`
override them. Errors come back as the gateway's own code and message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from hybridfast.config import Config, load_config
from hybridfast.errors import GatewayError

_BY_STATUS = {
    401: (
        "ERR_UNAUTHORIZED",
        "pass --master-key, or set $HYBRIDFAST_MASTER_KEY or server.master_key in the config",
    ),
    403: ("ERR_FORBIDDEN", "the admin API needs the master key, not a virtual key"),
    404: ("ERR_NOT_FOUND", "is that a hybridfast gateway of this version?"),
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--config`, `--url` and `--master-key`, for a command that calls the admin API."""
    parser.add_argument("--config", help="the config `serve` uses (default: as `serve` finds it)")
    parser.add_argument("--url", help="the gateway's base URL (default: from the config)")
    parser.add_argument(
        "--master-key",
        default=os.environ.get("HYBRIDFAST_MASTER_KEY"),
        help="default: $HYBRIDFAST_MASTER_KEY, else server.master_key of the config",
    )
    return parser


def write(text: str) -> None:
    """Prints, and leaves quietly when the reader has gone (`... | head`)."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None)).config


def base_url(args: argparse.Namespace, config: Config) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    host = config.server.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """The decoded JSON answer of `method path` on the running gateway."""
    config = config_of(args)
    base = base_url(args, config)
    key = args.master_key or config.server.master_key
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise _http_error(method, path, exc) from None
    except (OSError, ValueError) as exc:
        raise GatewayError(
            f"cannot reach {base} ({exc})",
            code="ERR_UNREACHABLE",
            hint="is `hybridfast serve` running there? (--url, or server.host/port in --config)",
        ) from None


def _http_error(method: str, path: str, exc: urllib.error.HTTPError) -> GatewayError:
    """The gateway's own error code and message when its body has them; else one by status."""
    code, hint = _BY_STATUS.get(exc.code, ("ERR_UPSTREAM", ""))
    message = f"{method} {path}: HTTP {exc.code}"
    try:
        error = json.loads(exc.read()).get("error", {})
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message += f": {error.get('message', '')}"
    except (ValueError, AttributeError, OSError):
        pass
    return GatewayError(message, code=code, hint=hint or None)
