"""`serve --workers N`: several processes on one port, one ledger, one /metrics view, a
supervisor that restarts a dead worker and drains them all on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer, start_server
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def wait_for_children(
    pid: int, count: int, timeout: float = 20.0, gone: int | None = None
) -> set[int]:
    """`count` children of `pid`, `gone` not among them (a killed worker stays listed until
    the supervisor has reaped it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) == count and gone not in found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{len(children(pid))} workers, expected {count}")


async def drive(url: str, n: int, concurrency: int = 8) -> list[tuple[int, str | None]]:
    results: list[tuple[int, str | None]] = []
    counter = iter(range(n))

    async def client() -> None:
        # A new connection per request, so the kernel spreads them over the workers.
        for i in counter:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    url + "/v1/chat/completions",
                    json={"model": "chat", "messages": [{"role": "user", "content": f"q{i}"}]},
                ) as resp,
            ):
                await resp.read()
                results.append((resp.status, resp.headers.get("x-hybridfast-request-id")))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def sqlite_config(fake: FakeUpstream, db: Path) -> str:
    return fake_config(fake).replace(
        "ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {db}\n"
    )


async def test_two_workers_answer_settle_restart_and_drain(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    with start_server(sqlite_config(fake_openai, db), args=["--workers", "2"]) as server:
        workers = wait_for_children(server.process.pid, 2)
        first = await drive(server.url, 120)
        assert {s for s, _ in first} == {200}

        # One /metrics view: both workers' series, labelled (a worker that is still starting
        # has no metrics socket yet: asked again until both answer, or the deadline).
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(server.url + "/metrics") as r:
                    text = await r.text()
                both = 'worker="0"' in text and 'worker="1"' in text
                if both or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert 'worker="0"' in text
        assert 'worker="1"' in text

        # A worker killed outright is replaced; the port keeps answering meanwhile.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for_children(server.process.pid, 2, gone=victim)  # replaced, or it raises
        second = await drive(server.url, 60)
        assert {s for s, _ in second} == {200}

        # SIGTERM to the supervisor drains every worker and exits cleanly.
        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert children(server.process.pid) == set()

    answered = {rid for s, rid in first + second if s == 200}
    with sqlite3.connect(db) as conn:
        rows = {rid for (rid,) in conn.execute("SELECT request_id FROM ledger_entries")}
    assert answered <= rows  # every answered request is in the one ledger, once
    assert len(rows) == len(answered)


def test_workers_refuse_budgets_counted_per_process(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    text = sqlite_config(fake_openai, tmp_path / "l.db")
    text += "budgets:\n  - {scope: global, window: total, limit_usd: 1}\n"
    with (
        pytest.raises(RuntimeError, match="counter: redis"),
        start_server(text, args=["--workers", "2"], timeout=10),
    ):
        pass


@pytest.mark.redis
async def test_workers_hold_a_shared_budget_exactly(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.switches.usage = {"input": 20, "output": 10}  # $0.00004 an answer
    prefix = f"hf-workers:{uuid.uuid4().hex[:8]}"
    db = tmp_path / "ledger.db"
    text = sqlite_config(fake_openai, db).replace(
        "  backend: sqlite\n",
        "  backend: sqlite\n  counter: redis\n  redis_url: redis://127.0.0.1:6379/0\n"
        f"  redis_prefix: '{prefix}'\n",
    )
    text += "budgets:\n  - {scope: global, window: total, limit_usd: 0.001}\n"
    server: RunningServer
    with start_server(text, args=["--workers", "2"]) as server:
        wait_for_children(server.process.pid, 2)
        results = await drive(server.url, 80)
    statuses = [s for s, _ in results]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0
    with sqlite3.connect(db) as conn:
        (spent,) = conn.execute("SELECT COALESCE(SUM(cost), 0) FROM ledger_entries").fetchone()
    assert spent <= 1_000_000_000  # never more than the $0.001 budget, across both workers
    assert spent == statuses.count(200) * 40_000_000
