"""Config validation that `serve` relies on: ranges, duplicate keys, YAML alias bombs,
secrets that the environment leaves null, and keys that would merge two tenants.
`config check` accepts exactly what `serve` does, so each case is checked through both the
parser and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridfast.cli import main
from hybridfast.config import MAX_YAML_VALUES, parse_config
from hybridfast.errors import ConfigError


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ("cache:\n  exact:\n    max_entries: -5\n", "x.yaml:3: cache.exact.max_entries"),
        ("router:\n  ewma_alpha: 7\n", "x.yaml:2: router.ewma_alpha"),
        ("router:\n  ewma_alpha: 0\n", "x.yaml:2: router.ewma_alpha"),
        ("server:\n  port: 99999\n", "x.yaml:2: server.port"),
        ("server:\n  port: 0\n", "x.yaml:2: server.port"),
        ("server:\n  max_body_bytes: -1\n", "x.yaml:2: server.max_body_bytes"),
        ("server:\n  max_body_bytes: 0\n", "x.yaml:2: server.max_body_bytes"),
        (
            "providers:\n  - name: p\n    kind: ollama\n    timeout: {total_s: -1}\n",
            "x.yaml:4: providers[0].timeout.total_s",
        ),
        ("embeddings:\n  max_batch: 0\n", "x.yaml:2: embeddings.max_batch"),
        ("cache:\n  semantic:\n    top_k: 0\n", "x.yaml:3: cache.semantic.top_k"),
        ("router:\n  circuit:\n    jitter: 3\n", "x.yaml:3: router.circuit.jitter"),
    ],
)
def test_out_of_range_values_are_refused_with_file_line_and_path(
    yaml_text: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml_text, "x.yaml", {})
    assert str(err.value).startswith(where)
    path = tmp_path / "x.yaml"
    path.write_text(yaml_text)
    assert main(["config", "check", str(path)]) != 0
    assert where.split(": ", 1)[1] in capsys.readouterr().err


def test_the_edges_of_each_range_are_accepted() -> None:
    config = parse_config(
        "server: {port: 65535, max_body_bytes: 1}\nrouter: {ewma_alpha: 1}\n"
        "cache: {exact: {max_entries: 0}}\n",
        "x.yaml",
        {},
    ).config
    assert (config.server.port, config.router.ewma_alpha) == (65535, 1.0)


def test_duplicate_keys_are_refused_naming_both_lines() -> None:
    text = "server:\n  port: 8080\n  host: 0.0.0.0\n  port: 9090\n"
    with pytest.raises(
        ConfigError, match=r"x\.yaml:4: server\.port: duplicate key \(first on line 2\)"
    ):
        parse_config(text, "x.yaml", {})


def test_duplicate_top_level_sections_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate key"):
        parse_config("keys: []\nserver: {port: 1}\nkeys: []\n", "x.yaml", {})


@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    # ~400 bytes that expand to 10^9 values: the old loader walked every one of them.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        levels.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(levels) + "\n"
    assert len(text) < 600
    with pytest.raises(ConfigError, match=f"more than {MAX_YAML_VALUES} values"):
        parse_config(text, "bomb.yaml", {})


def test_merge_keys_merge_and_written_keys_win() -> None:
    text = (
        "defaults: &p {kind: ollama, max_retries: 5}\n"
        "providers:\n"
        "  - <<: *p\n"
        "    name: a\n"
        "    max_retries: 1\n"
    )
    # `defaults` is not a section: drop it after the anchor has been read.
    with pytest.raises(ConfigError, match="unknown field `defaults`"):
        parse_config(text, "x.yaml", {})
    text = text.replace("defaults: &p {kind: ollama, max_retries: 5}\nproviders:\n", "providers:\n")
    text = (
        "providers:\n  - &p {name: base, kind: ollama, max_retries: 5}\n" + text.split("\n", 1)[1]
    )
    config = parse_config(text, "x.yaml", {}).config
    merged = config.providers[1]
    assert (merged.name, merged.kind, merged.max_retries) == ("a", "ollama", 1)


@pytest.mark.parametrize("value", ["null", "~", "Null", "NULL", ""])
def test_a_master_key_the_environment_leaves_null_is_an_error(value: str) -> None:
    """`MK=null` used to load as no master key at all: auth silently off."""
    with pytest.raises(ConfigError, match=r"x\.yaml:1: server\.master_key"):
        parse_config("server: {master_key: ${MK}}\n", "x.yaml", {"MK": value})


def test_an_unset_master_key_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"server\.master_key"):
        parse_config("server:\n  master_key: ${MK}\n", "x.yaml", {})


def test_an_explicit_empty_default_means_no_master_key() -> None:
    config = parse_config("server: {master_key: ${MK:-}}\n", "x.yaml", {}).config
    assert config.server.master_key is None


@pytest.mark.parametrize("leaf", ["metrics_key"])
def test_other_auth_keys_from_null_env_are_errors(leaf: str) -> None:
    with pytest.raises(ConfigError, match=f"server.{leaf}"):
        parse_config(f"server: {{{leaf}: ${{K}}}}\n", "x.yaml", {"K": "~"})


def test_virtual_key_from_null_env_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"keys\[0\]\.key"):
        parse_config("keys:\n  - {key: ${K}, name: bot}\n", "x.yaml", {"K": "null"})


def test_provider_key_set_to_a_null_word_is_an_error_but_unset_is_allowed() -> None:
    text = "providers:\n  - {name: o, kind: openai, api_key: ${OPENAI_API_KEY}}\n"
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api_key"):
        parse_config(text, "x.yaml", {"OPENAI_API_KEY": "null"})
    assert parse_config(text, "x.yaml", {}).config.providers[0].api_key is None


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        (
            "server: {master_key: admin-key-1}\nkeys:\n  - {key: k-1, name: master}\n",
            r"keys\[0\]\.name: `master` is the master key's name",
        ),
        (
            "keys:\n  - {key: k-1, name: bot}\n  - {key: k-2, name: bot}\n",
            r"keys\[1\]\.name: the same name as keys\[0\]",
        ),
        (
            "server: {master_key: admin-key-1}\nkeys:\n  - {key: admin-key-1, name: bot}\n",
            r"keys\[0\]\.key: is the master or metrics key",
        ),
        (
            "server: {master_key: admin-key-1, metrics_key: admin-key-1}\n",
            r"server\.metrics_key: is the master key",
        ),
        ("server: {master_key: '  '}\n", r"server\.master_key: is empty"),
    ],
)
def test_keys_that_would_weaken_auth_or_merge_tenants_are_refused(
    yaml_text: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(yaml_text, "x.yaml", {})


def test_new_security_settings_parse() -> None:
    config = parse_config(
        "server: {master_key: m-key-123, metrics_key: scrape-key-1, admin: open-on-loopback}\n"
        "keys:\n  - {key: k-1, name: bot, team: t, allow_client_user: true}\n"
        "providers:\n  - {name: p, kind: ollama, timeout: {idle_s: 2}}\n",
        "x.yaml",
        {},
    ).config
    assert config.server.metrics_key == "scrape-key-1"
    assert config.server.admin == "open-on-loopback"
    assert config.keys[0].allow_client_user
    assert config.providers[0].timeout.idle_s == 2.0
