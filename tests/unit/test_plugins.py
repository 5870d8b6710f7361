"""The callback hub: callbacks load from installed entry points, reload when the config
changes (a package installed after start appears then), and one that raises is isolated."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from hybridfast.config import Config, PluginsConfig
from hybridfast.experiments.plugins import CallbackHub, discover
from hybridfast.pipeline.context import RequestContext


def _install_dist(site: Path, name: str, body: str) -> None:
    """A minimal installed distribution: a module and its dist-info with entry points."""
    (site / f"{name}.py").write_text(body)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hybridfast.callbacks]\n{name} = {name}:Callback\n")


GOOD = """
import json
class Callback:
    def __init__(self, path, tag="x"):
        self.path, self.tag = path, tag
    async def on_answer(self, event):
        with open(self.path, "a") as f:
            f.write(json.dumps([event["request_id"], self.tag]) + "\\n")
"""
RAISES = """
class Callback:
    def on_answer(self, event):
        raise ValueError("boom")
"""


async def test_callbacks_reload_with_the_config_and_failures_are_isolated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _install_dist(tmp_path, "hf_test_good", GOOD)
    sink = tmp_path / "events.jsonl"
    options = {"hf_test_good": {"path": str(sink)}}
    gateway: Any = SimpleNamespace(config=Config(plugins=PluginsConfig(options=options)))
    hub = CallbackHub(gateway)
    hub.refresh()
    assert [c.info.name for c in hub.callbacks] == ["hf_test_good"]

    # Installed after start: not there until the config is reloaded.
    _install_dist(tmp_path, "hf_test_raises", RAISES)
    hub.refresh()
    assert len(hub.callbacks) == 1
    plugins = PluginsConfig(options={"hf_test_good": {"path": str(sink), "tag": "reloaded"}})
    gateway.config = msgspec.structs.replace(gateway.config, plugins=plugins)
    ctx = RequestContext("chat")
    await hub.dispatch(ctx, None, None)  # type: ignore[arg-type]
    assert sorted(c.info.name for c in hub.callbacks) == ["hf_test_good", "hf_test_raises"]
    received = [json.loads(line) for line in sink.read_text().splitlines()]
    assert received == [[ctx.request_id, "reloaded"]]
    failing = next(c for c in hub.callbacks if c.info.name == "hf_test_raises")
    assert (failing.calls, failing.failures) == (1, 1)
    assert failing.info.error == "ValueError: boom"

    # Only the named ones run once the config names them.
    gateway.config = msgspec.structs.replace(
        gateway.config, plugins=PluginsConfig(callbacks=["hf_test_raises"])
    )
    hub.refresh()
    assert [c.info.name for c in hub.callbacks] == ["hf_test_raises"]


def test_discover_reports_a_plugin_without_its_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _install_dist(tmp_path, "hf_test_shapeless", "class Callback:\n    pass\n")
    (info,) = [i for i in discover(("hybridfast.callbacks",)) if i.name == "hf_test_shapeless"]
    assert info.loaded is False
    assert info.error is not None
    assert "has no on_answer" in info.error
