"""The ledger under real `serve` processes: an answered request is in the store even when
the server is killed right after; two servers share one budget without overspending it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow


def _with_ledger(text: str, ledger_yaml: str) -> str:
    assert "ledger:\n  backend: memory\n" in text
    return text.replace("ledger:\n  backend: memory\n", ledger_yaml)


async def _chat(
    session: aiohttp.ClientSession, url: str, i: int, *, stream: bool = False
) -> tuple[int, str | None]:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 50,
        "stream": stream,
    }
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        await resp.read()  # the whole answer (for streams: through `data: [DONE]`)
        return resp.status, resp.headers.get("x-hybridfast-request-id")


# The default (`synchronous: normal`: the commit is in the write-ahead log, no fsync) is the
# guarantee users get without configuring anything; `full` adds an fsync per group commit.
@pytest.mark.parametrize("synchronous", [None, "full"], ids=["default", "full"])
async def test_an_answered_request_survives_kill_9(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
    synchronous: str | None,
) -> None:
    db = tmp_path / "ledger.db"
    ledger_yaml = f"ledger:\n  backend: sqlite\n  path: {db}\n"
    if synchronous is not None:
        ledger_yaml += f"  synchronous: {synchronous}\n"
    server = serve_gateway(_with_ledger(fake_config(fake_openai), ledger_yaml))
    answered: list[str] = []
    stop = asyncio.Event()
    enough = asyncio.Event()

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    status, rid = await _chat(
                        session, server.url, n * 10_000 + i, stream=i % 2 == 0
                    )
                except aiohttp.ClientError:
                    return  # the server is gone
                if status == 200 and rid:
                    answered.append(rid)
                    if len(answered) >= 150:
                        enough.set()

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    await asyncio.wait_for(enough.wait(), 60)
    # `ledger report` reads the same file while the server writes it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hybridfast", "ledger", "--config", str(server.config_path),
        "report", "--by", "model", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    (row,) = [json.loads(line) for line in out.decode().splitlines()]
    assert row["group"] == "chat"
    assert row["requests"] >= 150
    # Kill mid-traffic: requests in flight now were never answered, so need not be stored.
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    stop.set()
    await asyncio.gather(*clients)
    acked = list(answered)

    # Nobody else has the file open now: plain sqlite3 reads what is on disk.
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT request_id, cost FROM ledger_entries").fetchall())
    missing = [rid for rid in acked if rid not in rows]
    assert not missing, f"{len(missing)} of {len(acked)} answered requests lost: {missing[:5]}"
    assert all(rows[rid] > 0 for rid in acked)  # priced: $1/$2 per Mtok


@pytest.fixture
def pg_dsn() -> Iterator[tuple[str, str]]:
    """A fresh schema in the `test` database, dropped after the test."""
    psycopg = pytest.importorskip("psycopg")
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"hf_ledger_{uuid.uuid4().hex[:10]}"
    yield dsn, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
@pytest.mark.parametrize("counter", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
async def test_two_servers_share_one_budget(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    pg_dsn: tuple[str, str],
    counter: str,
) -> None:
    import psycopg
    import redis

    dsn, schema = pg_dsn
    prefix = f"hf-test:{uuid.uuid4().hex[:10]}"
    # Every answer costs the same: 20 input + 10 output tokens at $1/$2 per Mtok = $0.00004.
    fake_openai.switches.usage = {"input": 20, "output": 10}
    limit_usd = "0.001"  # room for at most 25 answers, with worst-case holds fewer at once
    ledger_yaml = (
        "ledger:\n  backend: postgres\n"
        f"  dsn: {dsn}\n  schema: {schema}\n"
        f"  counter: {counter}\n  redis_url: redis://127.0.0.1:6379/0\n"
        f"  redis_prefix: '{prefix}'\n"
        f"budgets:\n  - {{scope: global, window: total, limit_usd: {limit_usd}}}\n"
    )
    text = _with_ledger(fake_config(fake_openai), ledger_yaml)
    servers = [serve_gateway(text), serve_gateway(text)]
    statuses: list[int] = []

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(12):
                url = servers[(n + i) % 2].url
                status, _ = await _chat(session, url, n * 100 + i, stream=i % 3 == 0)
                statuses.append(status)

    await asyncio.gather(*(client(n) for n in range(8)))
    assert statuses.count(200) > 0
    assert statuses.count(429) > 0  # the budget ran out, and was enforced
    assert set(statuses) <= {200, 429}

    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        spent, answered = conn.execute(
            "SELECT COALESCE(SUM(cost), 0), COUNT(*) FILTER (WHERE status = 200) "
            "FROM ledger_entries"
        ).fetchone()  # type: ignore[misc]
    assert answered == statuses.count(200)
    assert int(spent) == answered * 40_000_000  # $0.00004 each, exactly
    assert int(spent) <= 1_000_000_000  # never more than the $0.001 budget
    if counter == "postgres":
        with psycopg.connect(dsn) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            rows = conn.execute("SELECT spent, reserved, limit_picos FROM budget_counters")
            ((shared_spent, reserved, limit),) = rows.fetchall()
        assert (shared_spent, reserved, limit) == (int(spent), 0, 1_000_000_000)
        return
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys: list[Any] = []
    try:
        keys = list(r.scan_iter(f"{prefix}:*"))
        (key,) = [k for k in keys if b":b:" in k]
        state = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
        assert state["spent"] == int(spent)
        assert state["reserved"] == 0
        assert state["avail"] == 1_000_000_000 - int(spent)
    finally:
        if keys:
            r.delete(*keys)
        r.close()
