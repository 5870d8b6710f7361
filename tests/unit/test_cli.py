"""The CLI: help everywhere, one-line errors with codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hybridfast.cli import build_parser, main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridfast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_help_at_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"serve", "config", "version"} <= set(subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_version_names_the_core() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("hybridfast 0.")
    assert "core" in result.stdout


def test_config_check_rejects_a_broken_file_with_the_key_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "providers:\n  - {name: o, kind: openai}\nmodels:\n"
        "  - {name: m, provider: o, model: x, price: {input_per_mtok: lots}}\n"
    )
    result = run_cli("config", "check", str(broken))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"error ERR_CONFIG: {broken}:4: models[0].price.input_per_mtok: Expected `float`, got "
        "`str` (hint: see examples/ for the shape of each section)"
    )
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_public_address_without_a_master_key(tmp_path: Path) -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert "ERR_CONFIG" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
