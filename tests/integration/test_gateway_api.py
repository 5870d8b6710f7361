"""The in-process Python API (`hybridfast.Gateway`) and the `route` / `serve` CLI commands:
the same pipeline without HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import hybridfast
from hybridfast._core import format_usd
from hybridfast.config import parse_config
from hybridfast.errors import InvalidRequest, ModelNotFound, ProviderUnavailable
from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.parts import RecordingLedger


async def test_python_api_chat_and_stream(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(fake_config(fake_openai, fake_ollama)).config
    ledger = RecordingLedger()
    async with hybridfast.Gateway(config, ledger=ledger) as gw:
        result = await gw.chat("Hello", model="chat", max_tokens=10)
        assert result.text == DEFAULT_REPLY
        assert result.deployment == "chat#0"
        assert result.cost == ledger.records[0].cost > 0
        assert result.cost_usd == format_usd(result.cost)
        fake_openai.fail(503)
        stream = gw.stream([{"role": "user", "content": "Hi"}], model="chat")
        pieces = [event.text async for event in stream if event.text]
        assert "".join(pieces) == DEFAULT_REPLY
        assert len(pieces) > 1
        assert stream.info.deployment_id == "chat#1"
        assert stream.info.cost == ledger.records[-1].cost
        assert stream.info.fallbacks == 1
        with pytest.raises(ModelNotFound):
            await gw.chat("x", model="nope")
        with pytest.raises(InvalidRequest):
            await gw.chat([], model="chat")
        fake_ollama.fail(500)
        before = fake_openai.calls, fake_ollama.calls
        with pytest.raises(ProviderUnavailable) as failed:
            await gw.chat("x", model="chat")
        # Both were tried (in the order the router chose); the status is the last failure's.
        assert (fake_openai.calls, fake_ollama.calls) == (before[0] + 1, before[1] + 1)
        assert failed.value.status in (500, 503)
    assert ledger.closed


async def test_gateway_from_config_file(tmp_path: Path, fake_anthropic: FakeUpstream) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(fake_config(fake_anthropic))
    async with hybridfast.Gateway.from_config(path) as gw:
        text = await gw.stream("Hi", model="chat").text()
    assert text == DEFAULT_REPLY


def run_cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridfast", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_route_cli(tmp_path: Path, fake_ollama: FakeUpstream) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(fake_config(fake_ollama) + "routes:\n  auto: {candidates: [chat]}\n")
    plain = run_cli("route", "Hello there", config=config)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == DEFAULT_REPLY + "\n"
    assert "deployment chat#0" in plain.stderr
    assert "cost $" in plain.stderr
    streamed = run_cli("route", "Hello there", "--stream", config=config)
    assert streamed.stdout == DEFAULT_REPLY + "\n"
    as_json = orjson.loads(run_cli("route", "Hello", "--json", config=config).stdout)
    assert as_json["text"] == DEFAULT_REPLY
    assert as_json["deployment"] == "chat#0"
    assert as_json["usage"]["output_tokens"] == 9
    calls = fake_ollama.calls
    dry = run_cli("route", "Hello", "--dry-run", config=config)
    assert dry.returncode == 0
    assert "chat#0" in dry.stdout
    assert fake_ollama.calls == calls  # no model was called
    missing = run_cli("route", "Hello", "--model", "nope", config=config)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error ERR_MODEL_NOT_FOUND")
    assert "Traceback" not in missing.stderr


def test_serve_refuses_public_bind_without_master_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("ledger: {backend: memory}\n")
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "1", config=config)
    assert result.returncode == 2
    assert "master key" in result.stderr
    assert "--insecure" in result.stderr


def test_serve_exits_when_the_gateway_cannot_start(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"ledger:\n  backend: sqlite\n  path: {tmp_path}/missing/dir/ledger.db\n")
    result = run_cli("serve", "--port", "0", config=config)
    assert result.returncode == 2
    assert "error ERR_NOT_READY: the gateway could not start" in result.stderr
    assert "unable to open database file" in result.stderr
