"""A real `serve` with `--log-format json`: the JSON request lines and the request log hold
exactly the requests sent — answered, cached, refused at the edge (bad JSON, unknown key,
unknown model) and abandoned by the client (499) — with no key or prompt text anywhere;
the admin API pages through them; the live feed streams per-second aggregates."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

MASTER = "sk-master-observability-0000"
USER_KEY = "sk-user-observability-1111"
PROMPT_MARK = "PURPLE-ELEPHANT-PROMPT"
ENV = {"OBS_MASTER_KEY": MASTER, "OBS_USER_KEY": USER_KEY}


def _config(fake_openai: FakeUpstream, tmp_path: Path) -> str:
    text = fake_config(fake_openai)
    text = text.replace(
        "ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {tmp_path}/l.db\n"
    )
    return text + (
        "server:\n  master_key: ${OBS_MASTER_KEY}\n"
        "keys:\n  - {key: ${OBS_USER_KEY}, name: alice, team: red}\n"
        "observability:\n  request_log: {flush_interval_ms: 20}\n"
    )


def _request_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "hybridfast.requests":
                lines.append(entry)
    return lines


async def _leave_mid_stream(url: str) -> None:
    body = {
        "model": "chat",
        "stream": True,
        "messages": [{"role": "user", "content": f"{PROMPT_MARK} leave early"}],
    }
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        await resp.content.readany()  # the first chunk, then hang up


async def _admin(url: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + path, headers={"Authorization": f"Bearer {MASTER}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _all_rows(url: str, **filters: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    cursor = ""
    while True:
        page = await _admin(url, f"/admin/requests?limit=3&{query}{cursor}")
        rows += page["data"]
        if not page["has_more"]:
            return rows
        cursor = f"&cursor={page['next_cursor']}"


async def test_logs_and_request_log_hold_exactly_the_requests_sent(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    server = serve_gateway(_config(fake_openai, tmp_path), ENV, args=["--log-format", "json"])
    sent: collections.Counter[tuple[int, str]] = collections.Counter()
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=USER_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": f"{PROMPT_MARK} what is 2+2?"}]
    first = await oa.chat.completions.with_raw_response.create(
        model="chat", messages=messages, temperature=0
    )
    sent[(200, "miss")] += 1
    again = await oa.chat.completions.with_raw_response.create(
        model="chat", messages=messages, temperature=0
    )
    assert again.headers["x-hybridfast-cache"] == "hit"
    sent[(200, "hit")] += 1
    stream = await oa.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    async for _ in stream:
        pass
    sent[(200, "bypass")] += 1  # no temperature: not deterministic, so not cached
    with pytest.raises(openai.NotFoundError):
        await oa.chat.completions.create(model="no-such-model", messages=messages)
    sent[(404, "ERR_MODEL_NOT_FOUND")] += 1
    bad_key = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad_key.chat.completions.create(model="chat", messages=messages)
    sent[(401, "ERR_UNAUTHORIZED")] += 1
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {USER_KEY}", "Content-Type": "application/json"}
        async with session.post(
            server.url + "/v1/chat/completions", data=b"{not json", headers=headers
        ) as resp:
            assert resp.status == 400
    sent[(400, "ERR_INVALID_REQUEST")] += 1
    an = anthropic.AsyncAnthropic(base_url=server.url, api_key=USER_KEY, max_retries=0)
    await an.messages.create(
        model="chat", max_tokens=50, messages=[{"role": "user", "content": "hi from anthropic"}]
    )
    sent[(200, "bypass")] += 1
    fake_openai.latency(per_chunk_s=0.2)
    await _leave_mid_stream(server.url)
    sent[(499, "ERR_CLIENT_GONE")] += 1

    total = sum(sent.values())
    for _ in range(200):  # the server notices the hang-up at its next write
        rows = await _all_rows(server.url)
        if len(rows) >= total and len(_request_lines(server)) >= total:
            break
        await asyncio.sleep(0.05)
    lines = _request_lines(server)

    def outcome(status: int, code: str | None, cache: str) -> tuple[int, str]:
        return (status, cache if status < 400 else str(code))

    assert collections.Counter(outcome(r["status"], r["code"], r["cache"]) for r in rows) == sent
    assert collections.Counter(outcome(x["status"], x["code"], x["cache"]) for x in lines) == sent
    assert {r["request_id"] for r in rows} == {x["request_id"] for x in lines}
    ids = {r["request_id"] for r in rows}
    assert first.headers["x-hybridfast-request-id"] in ids
    assert again.headers["x-hybridfast-request-id"] in ids
    answered = next(r for r in rows if r["request_id"] == first.headers["x-hybridfast-request-id"])
    assert answered["key_name"] == "alice"
    assert answered["team"] == "red"
    assert answered["cost_usd"] == first.headers["x-hybridfast-cost-usd"]
    assert answered["input_tokens"] > 0
    assert answered["deployment"] == "chat#0"

    log_text = server.log()
    for secret in (USER_KEY, MASTER, "test-key-0", PROMPT_MARK):
        assert secret not in log_text
        assert secret not in json.dumps(rows)

    # Filters go through the indexes the admin API documents.
    red = await _all_rows(server.url, team="red", status="200")
    assert {r["request_id"] for r in red} == {
        r["request_id"] for r in rows if r["team"] == "red" and r["status"] == 200
    }
    one = await _admin(server.url, f"/admin/requests/{answered['request_id']}")
    assert one["request_id"] == answered["request_id"]


async def test_admin_requests_refuses_bad_queries(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    server = serve_gateway(_config(fake_openai, tmp_path), ENV)
    headers = {"Authorization": f"Bearer {MASTER}"}
    async with aiohttp.ClientSession() as session:
        for query in ("limit=0", "limit=5000", "status=abc", "cursor=%%%", "color=red", "since=x"):
            async with session.get(
                server.url + "/admin/requests?" + query, headers=headers
            ) as resp:
                assert resp.status == 400, query
                body = await resp.json()
                assert body["error"]["code"] == "ERR_INVALID_REQUEST"
        user = {"Authorization": f"Bearer {USER_KEY}"}
        async with session.get(server.url + "/admin/requests", headers=user) as resp:
            assert resp.status == 403


async def test_live_feed_streams_per_second_aggregates(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    server = serve_gateway(_config(fake_openai, tmp_path), ENV)
    oa = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=USER_KEY, max_retries=0)
    headers = {"Authorization": f"Bearer {MASTER}"}
    seen: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url + "/admin/live?backfill=0", headers=headers) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for i in range(5):
            await oa.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"live {i}"}]
            )
        async for raw in resp.content:
            if raw.startswith(b"data: "):
                seen.append(json.loads(raw[6:]))
                if sum(s["requests"] for s in seen) >= 5:
                    break
    assert sum(s["requests"] for s in seen) == 5
    busy = [s for s in seen if s["requests"]]
    assert all(s["latency_p50_ms"] is not None and s["output_tokens"] > 0 for s in busy)
    assert all(s["errors"] == 0 for s in seen)
    assert [s["ts"] for s in seen] == sorted(s["ts"] for s in seen)
