"""Regressions of the request pipeline's shape (issue 10), each against fake upstreams that
speak the real wire formats:

1. An upstream answer with bad usage (negative, huge, float or string token counts) used to
   leave the budget hold reserved and the router's in-flight count raised forever, write no
   ledger line and answer 500 with no fallback. Now the attempt fails like any upstream
   error: the hold is released, the slot freed, the next deployment answers, and the
   request has its ledger line.
2. A malformed request refused by a half-open deployment used to keep the circuit's probe
   slot for `probe_timeout_s`, so valid requests were refused meanwhile.
3. A streamed failure used to be recorded as status 499 with a charge while the client saw
   a 500: the ledger line now carries the status of the error the client was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from hybridfast.config import parse_config
from hybridfast.deployments import build_deployments
from hybridfast.pipeline.gateway import Gateway
from hybridfast.routing import build_router
from hybridfast.server.app import create_app
from tests.conftest import _fake, fake_config
from tests.fakes import FakeUpstream
from tests.fakes.background import BackgroundLoop
from tests.fakes.parts import RecordingCache, RecordingLedger, RecordingRouter

# Token counts no upstream can mean, in the places the OpenAI wire format carries them.
BAD_USAGE = [
    pytest.param({"cached": -5}, id="negative"),
    pytest.param({"output": 2**62}, id="huge"),
    pytest.param({"cached": 1.5}, id="float"),
    pytest.param({"cached": "12"}, id="string"),
]

Start = Callable[..., Awaitable[tuple[TestClient, Gateway, RecordingLedger]]]


@pytest.fixture
def fake_openai_2(fake_loop: BackgroundLoop) -> Iterator[FakeUpstream]:
    yield from _fake("openai", fake_loop)


@pytest.fixture
def start(aiohttp_client: Any) -> Start:
    async def make(config_text: str) -> tuple[TestClient, Gateway, RecordingLedger]:
        config = parse_config(config_text).config
        deployments = build_deployments(config)
        ledger = RecordingLedger()
        gw = Gateway(
            config,
            deployments=deployments,
            router=RecordingRouter(build_router(config, deployments)),
            ledger=ledger,
            cache=RecordingCache(),
        )
        client = await aiohttp_client(create_app(config, gateway=gw))
        return client, gw, ledger

    return make


def in_flight(gw: Gateway, deployment_id: str) -> int:
    return int(gw.router.inner.stats(deployment_id)["in_flight"])  # type: ignore[attr-defined]


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "chat",
        "messages": [{"role": "user", "content": "Say something short."}],
        **extra,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def sse_data(text: str) -> list[Any]:
    return [
        line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:])
        for line in text.split("\n")
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("usage", BAD_USAGE)
async def test_bad_usage_releases_everything_and_falls_back(
    start: Start, fake_openai: FakeUpstream, fake_openai_2: FakeUpstream, usage: dict[str, Any]
) -> None:
    fake_openai.set(usage=usage)
    client, gw, ledger = await start(fake_config(fake_openai, fake_openai_2))
    resp = await client.post("/v1/chat/completions", json=chat())
    assert resp.status == 200, await resp.text()
    assert resp.headers["x-hybridfast-deployment"] == "chat#1"  # the next deployment answered
    assert fake_openai.calls == 1
    assert fake_openai_2.calls == 1
    assert ledger.held == {}  # the bad answer's hold was released, the good one settled
    assert [r.deployment for r in ledger.records] == ["chat#1"]
    assert ledger.records[0].status == 200
    assert ledger.records[0].fallbacks == 1
    assert in_flight(gw, "chat#0") == 0
    assert in_flight(gw, "chat#1") == 0
    events = gw.router.events  # type: ignore[attr-defined]
    assert ("finished", "chat#0", False) in events  # a failure of that deployment
    # The deployment is not left "saturated": when it is the one left, it answers.
    fake_openai.set(usage={})
    fake_openai_2.fail(503, times=1)
    again = await client.post("/v1/chat/completions", json=chat())
    assert again.status == 200
    assert in_flight(gw, "chat#0") == 0
    assert in_flight(gw, "chat#1") == 0


@pytest.mark.parametrize("usage", BAD_USAGE)
async def test_bad_usage_with_nowhere_to_fall_back_is_a_502_on_the_books(
    start: Start, fake_openai: FakeUpstream, usage: dict[str, Any]
) -> None:
    fake_openai.set(usage=usage)
    client, gw, ledger = await start(fake_config(fake_openai))
    resp = await client.post("/v1/chat/completions", json=chat())
    assert resp.status == 502
    body = await resp.json()
    assert body["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
    assert ledger.held == {}
    assert [(r.status, r.cost) for r in ledger.records] == [(502, 0)]
    assert in_flight(gw, "chat#0") == 0


async def test_a_malformed_request_never_holds_a_half_open_probe_slot(
    start: Start, fake_openai: FakeUpstream
) -> None:
    circuit = (
        "router:\n  circuit: {failures_to_open: 1, cooldown_s: 0.2, jitter: 0, "
        "successes_to_close: 2, probe_timeout_s: 30}\n"
    )
    client, gw, ledger = await start(fake_config(fake_openai, extra=circuit))
    fake_openai.fail(500, times=1)
    assert (await client.post("/v1/chat/completions", json=chat())).status == 500
    stats = gw.router.inner.stats  # type: ignore[attr-defined]
    assert stats("chat#0")["circuit"] == "open"
    await asyncio.sleep(0.3)
    assert stats("chat#0")["circuit"] == "half-open"
    # The probe is a request the upstream refuses as malformed: no verdict on the deployment.
    fake_openai.fail(400, times=1)
    refused = await client.post("/v1/chat/completions", json=chat())
    assert refused.status == 400
    assert in_flight(gw, "chat#0") == 0
    # Valid requests are served at once, not refused until probe_timeout_s has passed.
    for _ in range(3):
        ok = await client.post("/v1/chat/completions", json=chat())
        assert ok.status == 200, await ok.text()
    assert stats("chat#0")["circuit"] == "closed"
    assert ledger.held == {}


async def test_a_request_refused_by_the_gateway_holds_no_probe(
    start: Start, fake_openai: FakeUpstream
) -> None:
    """A request the gateway itself refuses (here: max_tokens no model has) is refused before
    routing, so it cannot claim a half-open deployment's probe."""
    circuit = (
        "router:\n  circuit: {failures_to_open: 1, cooldown_s: 0.2, jitter: 0, "
        "successes_to_close: 1, probe_timeout_s: 30}\n"
    )
    client, _gw, _ = await start(fake_config(fake_openai, extra=circuit))
    fake_openai.fail(500, times=1)
    await client.post("/v1/chat/completions", json=chat())
    await asyncio.sleep(0.3)
    too_many = await client.post("/v1/chat/completions", json=chat(max_tokens=2**40))
    assert too_many.status == 400
    assert fake_openai.calls == 1  # refused before anything was called
    ok = await client.post("/v1/chat/completions", json=chat())
    assert ok.status == 200, await ok.text()


async def test_a_streamed_failure_is_recorded_with_the_status_the_client_saw(
    start: Start, fake_openai: FakeUpstream
) -> None:
    # A usage chunk the adapter cannot read arrives after the text: the stream fails there.
    fake_openai.set(usage={"cached": "12"}, per_chunk_s=0.02)
    client, gw, ledger = await start(fake_config(fake_openai))
    resp = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert resp.status == 200  # the stream had started
    data = sse_data(await resp.text())
    errors = [d for d in data if isinstance(d, dict) and "error" in d]
    assert [e["error"]["code"] for e in errors] == ["ERR_PROVIDER_UNAVAILABLE"]
    (record,) = ledger.records
    assert record.status == 502  # what the error event says, not 499
    assert ledger.held == {}
    assert in_flight(gw, "chat#0") == 0


async def test_a_client_that_leaves_mid_stream_is_a_499_line(
    start: Start, fake_openai: FakeUpstream
) -> None:
    fake_openai.set(chunks=40, per_chunk_s=0.05, reply="word " * 40)
    client, gw, ledger = await start(fake_config(fake_openai))
    resp = await client.post("/v1/chat/completions", json=chat(stream=True))
    await resp.content.readany()
    resp.close()
    for _ in range(100):
        if ledger.records:
            break
        await asyncio.sleep(0.02)
    (record,) = ledger.records
    assert record.status == 499
    assert record.cost > 0  # what the upstream produced before is spent
    assert ledger.held == {}
    assert in_flight(gw, "chat#0") == 0
