"""Config reload helpers: secrets never reach the editor, and edits keep the values left masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridfast.errors import ConfigError, InvalidRequest
from hybridfast.server.reload import check_text, editable_source, mask, unmask, write_atomically

CONFIG = """server: {host: 127.0.0.1, master_key: mk-literal-0123456789}
providers:
  - name: openai
    kind: openai
    api_key: ${OPENAI_API_KEY}
  - {name: local, kind: openai-compatible, api_key: "sk-literal value", base_url: http://h:1/v1}
ledger:
  backend: postgres
  dsn: postgresql://user:pass@db/h  # the ledger
keys:
  - {name: bob-key, key: vk-literal-abc, user: bob}
"""


def test_mask_hides_literal_secrets_and_keeps_references() -> None:
    masked, values = mask(CONFIG)
    for secret in ("mk-literal-0123456789", "sk-literal value", "user:pass", "vk-literal-abc"):
        assert secret not in masked
    assert "${OPENAI_API_KEY}" in masked
    assert "# the ledger" in masked
    assert len(values) == 4


def test_unmask_restores_untouched_values_and_takes_new_ones() -> None:
    masked, _ = mask(CONFIG)
    assert unmask(masked, CONFIG) == CONFIG
    edited = masked.replace("user: bob", "user: alice").replace("<masked:3>", "vk-new")
    restored = unmask(edited, CONFIG)
    assert "vk-new" in restored
    assert "mk-literal-0123456789" in restored
    assert "user: alice" in restored


def test_unmask_refuses_a_placeholder_it_did_not_make() -> None:
    with pytest.raises(InvalidRequest):
        unmask("server: {master_key: <masked:9>}", CONFIG)


def test_check_text_is_config_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x" * 20)
    assert check_text(CONFIG, "edited.yaml").ledger.backend == "postgres"
    with pytest.raises(ConfigError) as bad:
        check_text(CONFIG.replace("backend: postgres", "backend: cassandra"), "edited.yaml")
    assert "edited.yaml:" in str(bad.value)
    assert "ledger.backend" in str(bad.value)


def test_write_atomically_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "hybridfast.yaml"
    path.write_text("old")
    path.chmod(0o640)
    write_atomically(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["hybridfast.yaml"]


def test_nothing_to_edit_without_a_file() -> None:
    with pytest.raises(ConfigError):
        editable_source("<defaults>")


def test_mask_hides_plugin_settings_named_like_secrets_but_not_switches() -> None:
    text = (
        "plugins:\n  options:\n    audit: {token: tk-literal-1, db_password: 'pw literal'}\n"
        "metrics:\n  by_key: true\n"
    )
    masked, values = mask(text)
    assert "tk-literal-1" not in masked
    assert "pw literal" not in masked
    assert "by_key: true" in masked
    assert len(values) == 2
    assert unmask(masked, text) == text
