"""SIGHUP re-reads the config file of a running `serve`: keys added, removed or rotated count
from the next request; a file that does not pass is refused and the running config stays."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.server import RunningServer

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-reload-master"


def _config(fake: FakeUpstream, *keys: str, master: str = MASTER) -> str:
    listed = "".join(f"  - {{key: {key}, name: {key.removeprefix('sk-')}}}\n" for key in keys)
    return fake_config(fake, server=f"  master_key: {master}", extra="keys:\n" + listed)


def _status(server: RunningServer, key: str) -> int:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    url = server.url + "/v1/chat/completions"
    return httpx.post(url, json=body, headers=headers, timeout=10).status_code


def _after_reload(server: RunningServer, key: str, expected: int) -> int:
    """The status `key` gets once the reload is through (SIGHUP is handled asynchronously)."""
    deadline = time.monotonic() + 10
    while (status := _status(server, key)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def test_sighup_applies_added_and_removed_keys(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    server = serve_gateway(_config(fake_openai, "sk-alice"))
    assert _status(server, "sk-alice") == 200
    assert _status(server, "sk-bob") == 401

    server.config_path.write_text(_config(fake_openai, "sk-bob"))
    server.process.send_signal(signal.SIGHUP)
    assert _after_reload(server, "sk-bob", 200) == 200
    assert _status(server, "sk-alice") == 401  # removed: refused from the same reload on
    assert "reloaded" in server.log()


def test_a_config_that_does_not_pass_is_refused_and_the_running_one_stays(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    server = serve_gateway(_config(fake_openai, "sk-alice"))
    server.config_path.write_text(_config(fake_openai, "sk-bob") + "router: {strategy: 7}\n")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused" in server.log()
    assert _status(server, "sk-alice") == 200
    assert _status(server, "sk-bob") == 401


def test_a_new_master_key_ends_dashboard_sessions_of_the_old_one(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    server = serve_gateway(_config(fake_openai, "sk-alice"))
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        assert browser.post("/ui/login", json={"key": MASTER}).status_code == 200
        assert browser.get("/admin/deployments").status_code == 200

        rotated = MASTER + "-rotated"
        server.config_path.write_text(_config(fake_openai, "sk-alice", master=rotated))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert browser.get("/admin/deployments").status_code == 401  # signed in with the old key
        assert browser.post("/ui/login", json={"key": MASTER}).status_code == 401
        assert browser.post("/ui/login", json={"key": rotated}).status_code == 200
        assert browser.get("/admin/deployments").status_code == 200
