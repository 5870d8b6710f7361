"""Zero-config outside `serve`: the in-process `Gateway.from_config()` and the `route` command
find an Ollama on `$OLLAMA_HOST` too (no config file anywhere), and a given config never
probes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridfast.config import parse_config
from hybridfast.pipeline.gateway import Gateway
from tests.conftest import fake_config
from tests.fakes.server import free_port
from tests.fakes.upstream import DEFAULT_REPLY, FakeUpstream


@pytest.fixture
def no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./hybridfast.yaml; the default SQLite ledger lands here
    for var in ("HYBRIDFAST_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HYBRIDFAST_DISCOVER_PORTS", "")
    return tmp_path


async def test_python_api_without_a_config_finds_ollama(
    no_config_here: Path, fake_ollama: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.root)
    async with Gateway.from_config() as gw:
        assert (await gw.chat("hi")).text == DEFAULT_REPLY
        assert gw.providers["ollama"].config.local is True


async def test_a_given_config_is_used_as_it_is(
    no_config_here: Path,
    fake_openai: FakeUpstream,
    fake_ollama: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.root)
    async with Gateway.from_config(parse_config(fake_config(fake_openai)).config) as gw:
        # Discovery would have added the fake Ollama's llama3.2:latest.
        assert {d.name for d in gw.deployments} == {"chat"}


def test_route_command_without_a_config_finds_ollama(
    no_config_here: Path, fake_ollama: FakeUpstream
) -> None:
    env = {**os.environ, "OLLAMA_HOST": fake_ollama.root}
    done = subprocess.run(
        [sys.executable, "-m", "hybridfast", "route", "hi"],
        cwd=no_config_here,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == DEFAULT_REPLY


def test_route_command_with_nothing_says_how_to_add_a_model(no_config_here: Path) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "hybridfast", "route", "hi"],
        cwd=no_config_here,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error ERR_NO_CHAT_MODELS")
    assert "OLLAMA_HOST" in done.stderr
    assert "Traceback" not in done.stderr
