"""Three `serve` instances on PostgreSQL + Redis behind a real HAProxy, under mixed traffic,
while one instance is killed with SIGKILL and another is stopped with SIGTERM and restarted:

- every request a client saw answered is in the shared ledger;
- the shared budget is never overspent;
- the cache is shared (an answer cached through one instance is a hit through another);
- clients see no error beyond the requests in flight on the killed instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer, free_port, start_server
from tests.fakes.upstream import FakeUpstream

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed"),
]

CONCURRENCY = 6
REQUESTS = 480
# 20 input + 10 output tokens at $1/$2 per Mtok = $0.00004 an answer; the budget runs out
# after about 250 of them, so refusals and answers mix in the second half.
LIMIT_PICOS = 10_000_000_000
ANSWER_PICOS = 40_000_000


def haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1"
        for i, p in enumerate(backends)
    )
    # One backend connection per request (http-server-close): a stopped instance's closed
    # listener is a refused connection, which HAProxy retries on another server.
    return f"""
global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    option http-server-close
    retry-on conn-failure empty-response
frontend gateway
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""


@contextlib.contextmanager
def run_haproxy(backends: list[int]) -> Iterator[str]:
    port = free_port()
    path = Path(tempfile.mkdtemp(prefix="hf-haproxy-")) / "haproxy.cfg"
    path.write_text(haproxy_config(port, backends))
    process = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(5)


@pytest.fixture
def shared_config(fake_openai: FakeUpstream) -> Iterator[tuple[str, str, str]]:
    psycopg = pytest.importorskip("psycopg")
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    schema = f"hf_haproxy_{uuid.uuid4().hex[:10]}"
    prefix = f"hf-haproxy:{uuid.uuid4().hex[:10]}"
    fake_openai.switches.usage = {"input": 20, "output": 10}
    text = fake_config(fake_openai).replace(
        "ledger:\n  backend: memory\n",
        "ledger:\n  backend: postgres\n"
        f"  dsn: {dsn}\n  schema: {schema}\n"
        "  counter: redis\n  redis_url: redis://127.0.0.1:6379/0\n"
        f"  redis_prefix: '{prefix}:budget'\n"
        f"budgets:\n  - {{scope: global, window: total, limit_usd: {LIMIT_PICOS / 1e12}}}\n"
        "cache:\n  backend: redis\n  redis_url: redis://127.0.0.1:6379/0\n"
        f"  redis_prefix: '{prefix}:cache'\n",
    )
    yield text, dsn, schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    import redis

    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(r.scan_iter(f"{prefix}:*"))
    if keys:
        r.delete(*keys)
    r.close()


async def chat(session: aiohttp.ClientSession, url: str, i: int, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 50,
        "stream": i % 3 == 0,
        **extra,
    }
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            await resp.read()
            return {
                "status": resp.status,
                "id": resp.headers.get("x-hybridfast-request-id"),
                "cache": resp.headers.get("x-hybridfast-cache"),
            }
    except aiohttp.ClientError as exc:
        return {"status": 0, "id": None, "error": repr(exc)}


async def test_three_instances_behind_haproxy_survive_kill_and_restart(
    shared_config: tuple[str, str, str],
) -> None:
    import psycopg

    text, dsn, schema = shared_config
    ports = [free_port() for _ in range(3)]
    with contextlib.ExitStack() as stack:
        servers: list[RunningServer] = [
            stack.enter_context(start_server(text, port=p)) for p in ports
        ]
        async with aiohttp.ClientSession() as session:
            # The cache is shared: cached through instance 0, a hit through instance 2.
            first = await chat(session, servers[0].url, 10_000, temperature=0, stream=False)
            again = await chat(session, servers[2].url, 10_000, temperature=0, stream=False)
            assert first["status"] == again["status"] == 200
            assert again["cache"] == "hit"

        with run_haproxy(ports) as lb:
            results: list[dict[str, Any]] = []
            sent = 0
            killed_in_flight = 0
            # Set when the clients have sent a quarter and a half of the requests.
            quarter, half = asyncio.Event(), asyncio.Event()
            restarted = stack.enter_context(contextlib.ExitStack())

            async def client() -> None:
                nonlocal sent
                async with aiohttp.ClientSession() as session:
                    while sent < REQUESTS:
                        sent += 1
                        if sent >= REQUESTS // 4:
                            quarter.set()
                        if sent >= REQUESTS // 2:
                            half.set()
                        results.append(await chat(session, lb, sent))

            async def chaos() -> None:
                nonlocal killed_in_flight
                await quarter.wait()
                servers[0].process.send_signal(signal.SIGKILL)
                killed_in_flight = CONCURRENCY  # at most every client's request was on it
                await half.wait()
                assert servers[1].stop(signal.SIGTERM) == 0, servers[1].log()
                servers[1] = await asyncio.to_thread(
                    restarted.enter_context, start_server(text, port=ports[1])
                )

            await asyncio.gather(chaos(), *(client() for _ in range(CONCURRENCY)))
            restarted.close()

    statuses = [r["status"] for r in results]
    errors = [r for r in results if r["status"] not in (200, 429)]
    assert statuses.count(200) > 0, statuses
    assert statuses.count(429) > 0, statuses  # the budget ran out and was enforced
    assert len(errors) <= killed_in_flight, errors

    answered = {r["id"] for r in results if r["status"] == 200} | {first["id"], again["id"]}
    with psycopg.connect(dsn) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        rows = conn.execute("SELECT request_id, status, cost FROM ledger_entries").fetchall()
    in_ledger = {rid for rid, status, _ in rows if status == 200}
    assert answered <= in_ledger, f"answered but not in the ledger: {answered - in_ledger}"
    spent = sum(int(cost) for _, _, cost in rows)
    assert spent <= LIMIT_PICOS, "the shared budget was overspent"
    assert spent % ANSWER_PICOS == 0
