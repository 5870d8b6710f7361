"""What the edge decides about a request before the pipeline sees it: who the caller is
(identity comes from the key, not the body), which keys may reach admin and metrics, and
what a client's own request id may be.

- `IdentityPolicy.caller(caller, body_user)`: a body's `user` / `metadata.user_id` names the
  caller only for anonymous gateways (no keys configured) and the master key. A virtual key
  is its own identity, unless it is configured `allow_client_user: true`; then the body's
  user counts, as `<team>/<user>` (the key's team, else the key's name), so a key can budget
  its own end users but never reach a budget of a user outside its team.
- `Access`: `/admin` answers the master key only, and nobody when none is configured (unless
  `server.admin: open-on-loopback`, for requests from this machine). `/metrics` answers the
  master key and `server.metrics_key` (anyone when no key at all is configured); the metrics
  key answers nothing else.
- `correlation_id(value)`: a client-sent request id is kept only when it is printable
  ASCII of at most 128 characters; it is stored beside the gateway's own id, never as it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hybridfast.config import Config
from hybridfast.errors import GatewayError, Unauthorized
from hybridfast.types import Caller

MASTER_NAME = "master"
MAX_CORRELATION_ID = 128
CLIENT_REQUEST_ID_HEADER = "x-hybridfast-client-request-id"


@dataclass(frozen=True)
class IdentityPolicy:
    """Which virtual keys may name their end users, and the tenant their users fall under."""

    client_user_scope: dict[str, str]  # key name -> prefix of the users it may name

    @classmethod
    def from_config(cls, config: Config) -> IdentityPolicy:
        return cls({k.name: k.team or k.name for k in config.keys if k.allow_client_user})

    def caller(self, caller: Caller, body_user: str | None) -> Caller:
        """The caller this request is accounted to."""
        if not body_user:
            return caller
        if caller.key_name is None or caller.key_name == MASTER_NAME:
            if caller.user is not None:
                return caller
            return Caller(
                key_name=caller.key_name, user=body_user, team=caller.team, tags=caller.tags
            )
        scope = self.client_user_scope.get(caller.key_name)
        if scope is None:
            return caller  # identity comes from the key
        return Caller(
            key_name=caller.key_name,
            user=f"{scope}/{body_user}",
            team=caller.team,
            tags=caller.tags,
        )


def forbidden(message: str, hint: str) -> GatewayError:
    return GatewayError(message, code="ERR_FORBIDDEN", status=403, hint=hint)


@dataclass(frozen=True)
class Access:
    """Who may reach /admin and /metrics."""

    master_key: str | None
    metrics_key: str | None
    open_on_loopback: bool
    auth_on: bool  # any key configured: requests need one
    known_keys: frozenset[str] = frozenset()  # keys in the config (an unknown key is a 401)

    @classmethod
    def from_config(cls, config: Config) -> Access:
        server = config.server
        return cls(
            server.master_key or None,
            server.metrics_key or None,
            server.admin == "open-on-loopback",
            bool(server.master_key or server.metrics_key or config.keys),
            frozenset(k for k in (server.master_key, server.metrics_key) if k)
            | {k.key for k in config.keys},
        )

    def check(self, path: str, key: str | None, remote: str | None) -> bool:
        """Raises when `key` may not reach `path`; True when the request is let through
        here (metrics and admin paths), False for the ordinary auth to decide (which then
        refuses /admin to anything but the master key)."""
        if path == "/metrics":
            if not self.auth_on:
                return True  # no keys configured: the page is as open as the gateway
            if key is not None and key in (self.master_key, self.metrics_key):
                return True
            raise forbidden(
                "/metrics needs the metrics key or the master key",
                "send server.metrics_key as the bearer token",
            )
        if self.metrics_key is not None and key == self.metrics_key:
            raise forbidden(
                "the metrics key reads /metrics only", "use a virtual key or the master key"
            )
        if path.startswith("/admin"):
            if self.master_key is not None:
                if key == self.master_key:
                    return True
                if key is None:
                    raise Unauthorized("missing or unknown API key")
                if key not in self.known_keys:
                    return False  # perhaps a key made at run time: the key store decides
                raise forbidden(
                    "the admin API needs the master key",
                    "send server.master_key as the bearer token",
                )
            if self.open_on_loopback and is_loopback(remote):
                return True
            raise forbidden(
                "the admin API is off: no master key is configured",
                "set server.master_key, or server.admin: open-on-loopback on a laptop",
            )
        return False


def is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def correlation_id(value: str | None) -> str | None:
    """A client's request id, when it is a short printable ASCII string; else None."""
    if not value or len(value) > MAX_CORRELATION_ID:
        return None
    if not value.isascii() or not value.isprintable():
        return None
    return value
