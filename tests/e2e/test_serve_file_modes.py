"""What `serve` writes to disk is readable by its owner only: the ledger holds every
request's cost and user, its siblings the request log (prompts, when enabled) and keys."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow


def test_the_ledger_and_its_sibling_files_are_owner_only(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    text = fake_config(fake_openai)
    assert "ledger:\n  backend: memory\n" in text
    server = serve_gateway(
        text.replace("ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {db}\n")
    )
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}
    resp = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    written = sorted(p for p in tmp_path.iterdir() if p.name.startswith("ledger"))
    assert db in written, written
    assert len(written) > 1, written  # the ledger, its WAL, the siblings
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes
