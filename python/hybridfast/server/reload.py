"""Config reload without a restart: `SIGHUP`, `POST /admin/config` and the dashboard's editor.

Every path goes through `apply_text`: the new text is checked by the same parser as
`hybridfast config check` (a bad file changes nothing and says why, with file, line and key
path), then the file is replaced atomically and the running gateway is reconfigured — new
requests use the new config, requests in flight finish on the one they started with.

The editor never sees a secret: `mask` replaces literal secret values (keys, DSNs, Redis URLs)
with numbered placeholders; `unmask` puts the file's current values back for placeholders the
user left alone. `${VAR}` references are not secrets and are shown as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from hybridfast.config import Config, parse_config
from hybridfast.errors import ConfigError, InvalidRequest
from hybridfast.pipeline.gateway import Gateway
from hybridfast.redact import SECRET_NAME

log = logging.getLogger("hybridfast.reload")

# `field: value` in block or flow style, for a field named like a secret (redact.SECRET_NAME:
# the config's keys and DSNs, plugins' tokens and passwords); the value runs to a comma,
# brace, comment or line end.
_SECRET_VALUE = re.compile(
    r"(?P<head>(?:^|[\s{,])(?:" + SECRET_NAME + r")\s*:[ \t]*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,}#][^,}#\n]*?)(?=[ \t]*(?:[,}#\n]|$))",
    re.MULTILINE,
)
_PLACEHOLDER = re.compile(r"<masked:(\d+)>")
_NOT_SECRET = re.compile(r"true|false|null|~|-?\d+(?:\.\d+)?|\[\]|\{\}", re.IGNORECASE)


def mask(text: str) -> tuple[str, list[str]]:
    """The text with literal secret values replaced by `<masked:N>`, and the values."""
    values: list[str] = []

    def swap(m: re.Match[str]) -> str:
        value = m.group("value")
        if value.strip("\"'").startswith("${") or _PLACEHOLDER.fullmatch(value):
            return m.group(0)
        if _NOT_SECRET.fullmatch(value):  # `by_key: true`: a switch named like a key
            return m.group(0)
        values.append(value)
        return f"{m.group('head')}<masked:{len(values) - 1}>"

    return _SECRET_VALUE.sub(swap, text), values


def unmask(edited: str, current: str) -> str:
    """`edited` with every placeholder replaced by the value it stands for in `current`."""
    _, values = mask(current)

    def back(m: re.Match[str]) -> str:
        index = int(m.group(1))
        if index >= len(values):
            raise InvalidRequest(
                f"{m.group(0)} does not stand for a value of the current config",
                hint="leave masked values as they are, or type the new value",
            )
        return values[index]

    return _PLACEHOLDER.sub(back, edited)


def check_text(text: str, source: str, env: Mapping[str, str] | None = None) -> Config:
    """The config the text describes, or `ConfigError` with file:line and key path."""
    return parse_config(text, source, os.environ if env is None else env).config


def write_atomically(path: Path, text: str) -> None:
    """Replaces the file in one rename, keeping its permissions: a crash leaves the old file
    or the new one, never half of either."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def editable_source(source: str) -> Path:
    """The config file serve runs on; started without one, there is nothing to edit."""
    if source.startswith("<"):
        raise ConfigError(
            "serve was started without a config file, so there is no file to change",
            hint="start serve with --config PATH (or ./hybridfast.yaml) to edit it here",
        )
    return Path(source)


async def reload_file(source: str, gateway: Gateway) -> None:
    """SIGHUP: re-reads the config file; a file that does not pass is refused with a log line
    and the running config stays."""
    try:
        path = editable_source(source)
        config = check_text(await asyncio.to_thread(path.read_text, encoding="utf-8"), source)
        await gateway.reconfigure(config)
    except ConfigError as exc:
        log.error("reload refused, the running config stays: %s", exc)
        return
    except Exception:
        log.exception("reload failed, the running config stays")
        return
    log.warning("reloaded %s", source)


def sighup_ctx(source: str, gateway_of: Callable[[web.Application], Gateway]) -> Any:
    """A cleanup_ctx: SIGHUP reloads the config file while the app runs."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            task = asyncio.ensure_future(reload_file(source, gateway_of(app)))
            pending.add(task)
            task.add_done_callback(pending.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals: Windows
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)

    return ctx
