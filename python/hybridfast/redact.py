"""The one scrubber: every text that leaves the gateway (error bodies, error events inside
streams, log records, metrics labels) passes through `scrub` first.

It removes two kinds of things:
- the secrets this gateway is configured with (provider API keys, the master key, the
  metrics key, virtual keys, passwords in DSNs and URLs) in any letter case, percent-encoded,
  and base64-encoded (standard or URL-safe alphabet, at any alignment inside a longer base64
  text, as in an HTTP Basic `Authorization` header);
- anything shaped like an API key or a bearer credential, configured or not (`sk-...`,
  `sk-ant-...`, `AKIA...`, `Bearer ...`), including the masked forms upstreams quote back
  (`sk-proj-****abcd`).

`configure(secrets)` installs the configured secrets (the server and the Python API do it
from the config at start); `install_log_scrubbing()` makes every log record pass through
the scrubber, whichever logger or handler emits it, aiohttp's included.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from aiohttp import web_protocol
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from hybridfast.config import Config

REDACTED = "[redacted]"

# Credentials whatever their owner: provider key formats, and bearer/basic tokens.
# One word boundary, then the shapes (cheaper than one `\b` per alternative).
_KEY_SHAPES = (
    r"\b(?:"
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-...), and look-alikes; `*`
    # covers masked copies such as `sk-proj-********abcd`.
    r"(?:sk|pk|rk|gsk|xai)[-_][A-Za-z0-9_\-*]{6,}"
    r"|AKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google API keys
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face tokens
    r"|(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}"  # GitHub tokens
    r")",
)
# The value after an auth scheme or an auth header name (the name is kept). A credential is
# a run of at least 8 token characters: prose ("the bearer token") is not one.
_CREDENTIAL_VALUE = (
    r"(?P<name>(?i:\b(?:bearer|basic)(?: |%20)|\b(?:x-api-key|api-key)(?:: |=)|\bapi_key="
    r"|\"api_key\": \"))[A-Za-z0-9._~+/=\-]{8,}",
)
# Too short to scrub without mangling ordinary words (a key of four letters is not a key).
_MIN_SECRET_LEN = 6


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 characters that depend on `secret`'s bytes alone, at each of the three
    alignments it can have inside a longer encoded text (standard and URL-safe)."""
    cores: list[str] = []
    n = len(secret)
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        first = -(-8 * offset // 6)  # the first character whose 6 bits are all secret bits
        last = (8 * offset + 8 * n) // 6  # one past the last such character
        core = encoded[first:last]
        if len(core) >= _MIN_SECRET_LEN:
            cores.append(core)
            cores.append(core.translate(str.maketrans("+/", "-_")))
    return cores


def secret_variants(secret: str) -> tuple[list[str], list[str]]:
    """Every spelling of `secret` the scrubber looks for: the plain ones (matched in any
    letter case: the secret itself, percent-encoded, a masked tail) and the base64 ones
    (matched exactly: base64 is case-sensitive)."""
    plain = {secret, quote(secret, safe=""), quote_plus(secret)}
    if len(secret) > 8:
        # Masked copies quote the last characters after a run of asterisks.
        plain.add(f"***{secret[-4:]}")
    encoded = set(_base64_cores(secret.encode()))
    return (
        sorted((v for v in plain if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True),
        sorted(encoded, key=len, reverse=True),
    )


def _dsn_password(value: str) -> str | None:
    """The password inside a URL-shaped secret (`postgresql://u:pw@host/db`)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return parts.password or None


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of `words`, built as a trie (shared prefixes merged): with a
    thousand keys a flat alternation costs seconds per 100 KB of text, this a few ms. At a
    word that is also the prefix of a longer one, the longer is tried first."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here: the rest is optional
            return body + "?" if len(branches) == 1 and len(body) == 1 else f"(?:{body})?"
        return body

    return build(trie)


def _replacement(match: re.Match[str]) -> str:
    name = match.group("name")
    return name + REDACTED if name else REDACTED


class Scrubber:
    """A compiled pattern over the configured secrets' variants and the key shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        plain: set[str] = set()
        encoded: set[str] = set()
        for secret in secrets:
            for value in (secret, _dsn_password(secret) if secret else None):
                if value and len(value) >= _MIN_SECRET_LEN:
                    spelled, b64 = secret_variants(value)
                    plain.update(spelled)
                    encoded.update(b64)
        configured = []
        if plain:
            configured.append(f"(?i:{_trie_pattern(w.lower() for w in plain)})")
        if encoded:
            configured.append(_trie_pattern(encoded))
        self.variants = frozenset(plain | encoded)
        self._pattern = re.compile("|".join([*configured, *_KEY_SHAPES, *_CREDENTIAL_VALUE]))

    def scrub(self, text: str) -> str:
        return self._pattern.sub(_replacement, text)

    def scrub_bytes(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        cleaned = self._pattern.sub(_replacement, text)
        return data if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


_lock = threading.Lock()
_active = Scrubber()


_configured: set[str] = set()


def configure(secrets: Iterable[str]) -> Scrubber:
    """Makes `secrets` (and their variants) part of what `scrub` removes, on top of the ones
    configured before: several gateways in one process each add theirs."""
    global _active
    new = [s for s in secrets if s]
    with _lock:
        if not set(new) <= _configured:
            _configured.update(new)
            _active = Scrubber(_configured)
            _with_extra.cache_clear()
        return _active


def active() -> Scrubber:
    return _active


def scrub(text: str) -> str:
    """`text` with every configured secret and key-shaped string replaced."""
    return _active.scrub(text)


def scrub_bytes(data: bytes) -> bytes:
    return _active.scrub_bytes(data)


@functools.lru_cache(maxsize=64)
def _with_extra(extra: tuple[str, ...]) -> Scrubber:
    return Scrubber([*_configured, *extra])


def scrub_with(text: str, extra: Iterable[str]) -> str:
    """`scrub`, also removing `extra` (a provider's own key, in a process whose config was
    never `configure`d, such as a test or an embedding application)."""
    return _with_extra(tuple(sorted(s for s in extra if s))).scrub(text)


# --- logs ----------------------------------------------------------------------------------


class ScrubFilter(logging.Filter):
    """Rewrites a record's message, arguments and traceback text through the scrubber.
    Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_record(record)
        return True


def scrub_record(record: logging.LogRecord) -> None:
    if getattr(record, "_hybridfast_scrubbed", False):
        return
    setattr(record, "_hybridfast_scrubbed", True)  # noqa: B010 - LogRecord has no such slot
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: logging reports it later, as it would
        return
    record.msg = _active.scrub(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = _active.scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = _active.scrub(record.stack_info)


# Loggers that name request details (aiohttp's server logs a malformed header's raw bytes).
_FRAMEWORK_LOGGERS = (
    "",
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "asyncio",
    "hybridfast",
)
_installed = False


def install_log_scrubbing() -> None:
    """Every log record is scrubbed as it is made (a record factory: this covers loggers and
    handlers created later, and records that propagate from child loggers), and the filter
    sits on the root and framework loggers and the root's handlers for records made by
    another factory. Idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
        scrub_filter = ScrubFilter()
        for name in _FRAMEWORK_LOGGERS:
            logging.getLogger(name).addFilter(scrub_filter)
        for handler in logging.getLogger().handlers:
            handler.addFilter(scrub_filter)


# A setting whose name says it holds a secret: the config's own (`api_key`, `master_key`,
# `dsn`...) and, in plugins' free-form `options`, any name ending in key, token, secret,
# password or credential(s). The config editor masks these too (server/reload.py).
SECRET_NAME = (
    r"(?:[A-Za-z0-9]+[_-])*(?:key|token|secret|password|passwd|credentials?|dsn)|redis_url"
)
_SECRET_NAME = re.compile(SECRET_NAME, re.IGNORECASE)


def config_secrets(config: Config) -> list[str]:
    """Every secret a config holds: provider keys, the master and metrics keys, virtual
    keys, the DSN and Redis URLs (their passwords are taken out of them), and what plugins'
    `options` hold under a secret's name or as a URL's password."""
    server = config.server
    values = [server.master_key, server.metrics_key, config.ledger.dsn, config.ledger.redis_url]
    values += [config.cache.redis_url]
    values += [p.api_key for p in config.providers]
    values += [value for p in config.providers for value in p.headers.values()]
    values += [k.key for k in config.keys]
    options = [p.options for p in config.providers] + [config.cache.options]
    options += [r.options for r in config.routes.values()] + [g.options for g in config.guardrails]
    options += list(config.plugins.options.values())
    for found in options:
        values += _option_secrets(found)
    return [v for v in values if v]


def _option_secrets(options: Any, name: str = "") -> list[str]:
    if isinstance(options, dict):
        return [v for key, item in options.items() for v in _option_secrets(item, str(key))]
    if isinstance(options, list):
        return [v for item in options for v in _option_secrets(item, name)]
    if not isinstance(options, str):
        return []
    if _SECRET_NAME.fullmatch(name):
        return [options]
    password = _dsn_password(options)
    return [password] if password else []


# --- aiohttp's answer to a request it cannot parse ---------------------------------------

_BAD_HTTP_BODY = (
    b'{"error":{"message":"malformed HTTP request (hint: check the request line and '
    b'headers)","type":"invalid_request_error","code":"ERR_BAD_HTTP","param":null}}'
)


def install_http_error_scrubbing() -> None:
    """aiohttp answers a request it cannot parse (a control character in a header, say)
    with the parser's message, which quotes the offending header line: an
    `Authorization` header's key goes back out, to the client and through any proxy that
    logs bodies. This replaces that answer with a fixed JSON error (`ERR_BAD_HTTP`) for
    every 4xx the parser raises; the log record keeps the details, scrubbed. Idempotent."""
    handler = web_protocol.RequestHandler
    original = handler.handle_error
    if getattr(original, "_hybridfast", False):
        return

    def handle_error(
        self: web_protocol.RequestHandler,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        resp = original(self, request, status, exc, message)
        if 400 <= status < 500 and isinstance(resp, Response):
            resp.body = _BAD_HTTP_BODY
            resp.content_type = "application/json"
        return resp

    handle_error._hybridfast = True  # type: ignore[attr-defined]
    handler.handle_error = handle_error  # type: ignore[method-assign]
