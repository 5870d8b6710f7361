"""Edge decisions: identity from the key, admin and metrics access, client request ids."""

from __future__ import annotations

import pytest

from hybridfast.config import parse_config
from hybridfast.errors import GatewayError
from hybridfast.types import Caller
from hybridfast.validation.edge import Access, IdentityPolicy, correlation_id

CONFIG = parse_config(
    "server: {master_key: m-key-1, metrics_key: s-key-1}\n"
    "keys:\n"
    "  - {key: k-1, name: plain, team: red}\n"
    "  - {key: k-2, name: bot, team: support, allow_client_user: true}\n"
    "  - {key: k-3, name: solo, allow_client_user: true}\n",
    "x.yaml",
    {},
).config


def test_a_virtual_key_is_its_own_identity() -> None:
    policy = IdentityPolicy.from_config(CONFIG)
    plain = Caller(key_name="plain", team="red")
    assert policy.caller(plain, "victim") == plain


def test_allowed_keys_name_users_inside_their_team_only() -> None:
    policy = IdentityPolicy.from_config(CONFIG)
    assert policy.caller(Caller(key_name="bot", team="support"), "alice").user == "support/alice"
    assert policy.caller(Caller(key_name="solo"), "alice").user == "solo/alice"


def test_anonymous_and_master_callers_may_name_users() -> None:
    policy = IdentityPolicy.from_config(CONFIG)
    assert policy.caller(Caller(), "alice").user == "alice"
    assert policy.caller(Caller(key_name="master"), "alice").user == "alice"
    assert policy.caller(Caller(key_name="master", user="x"), "alice").user == "x"


@pytest.mark.parametrize(
    ("path", "key", "ok"),
    [
        ("/metrics", "s-key-1", True),
        ("/metrics", "m-key-1", True),
        ("/metrics", "k-1", False),
        ("/metrics", None, False),
        ("/admin/budgets", "m-key-1", True),
        ("/admin/budgets", "k-1", False),
        ("/admin/budgets", "s-key-1", False),
        ("/v1/chat/completions", "s-key-1", False),
    ],
)
def test_access(path: str, key: str | None, ok: bool) -> None:
    access = Access.from_config(CONFIG)
    if ok:
        assert access.check(path, key, "127.0.0.1")
    else:
        with pytest.raises(GatewayError) as err:
            access.check(path, key, "127.0.0.1")
        assert err.value.status in (401, 403)


def test_ordinary_paths_are_left_to_the_ordinary_auth() -> None:
    assert not Access.from_config(CONFIG).check("/v1/chat/completions", "k-1", None)


def test_admin_without_a_master_key() -> None:
    closed = Access.from_config(parse_config("{}\n", "x.yaml", {}).config)
    with pytest.raises(GatewayError, match="no master key"):
        closed.check("/admin/budgets", None, "127.0.0.1")
    assert closed.check("/metrics", None, None)  # nothing configured: as open as the gateway
    laptop = Access.from_config(
        parse_config("server: {admin: open-on-loopback}\n", "x.yaml", {}).config
    )
    assert laptop.check("/admin/budgets", None, "127.0.0.1")
    assert laptop.check("/admin/budgets", None, "::1")
    with pytest.raises(GatewayError):
        laptop.check("/admin/budgets", None, "10.0.0.7")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("trace-42", "trace-42"),
        ("a" * 128, "a" * 128),
        ("a" * 129, None),
        ("", None),
        (None, None),
        ("tab\there", None),
        ("caf\u00e9", None),
        ("\udcff\udcfe", None),
    ],
)
def test_correlation_ids(value: str | None, kept: str | None) -> None:
    assert correlation_id(value) == kept


def test_admin_with_a_key_the_config_does_not_know_is_left_to_the_key_store() -> None:
    """A virtual key made at run time is not in the config: the ordinary auth resolves it
    (401 when unknown there too, 403 when known but not the master key)."""
    access = Access.from_config(CONFIG)
    assert not access.check("/admin/cache", "not-in-config", None)
    with pytest.raises(GatewayError) as known:
        access.check("/admin/cache", "k-1", None)
    assert known.value.status == 403
