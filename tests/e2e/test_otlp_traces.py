"""OpenTelemetry traces from a real `serve`, received by an OTLP/HTTP endpoint in the test
(the protobuf decoded with opentelemetry-proto): the span tree and the GenAI attributes of
a request that falls back, and of a stream that breaks and is recovered on another
deployment; the caller's `traceparent` is continued and each upstream call carries its own.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import fake_config
from tests.fakes.background import BackgroundLoop
from tests.fakes.server import RunningServer, free_port
from tests.fakes.upstream import FakeUpstream

json_format = pytest.importorskip("google.protobuf.json_format")
trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="the otel extra is not installed",
)
pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP traces endpoint: keeps every span it is sent, as plain dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.encodings: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = trace_service_pb2.ExportTraceServiceRequest()
        if request.content_type == "application/json":
            self.encodings.append("json")
            json_format.ParseDict(_ids_as_base64(json.loads(body)), export)
        else:
            self.encodings.append("protobuf")
            export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}.get(
                "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status": span.status.code,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        response = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(
            body=response.SerializeToString(), content_type="application/x-protobuf"
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _ids_as_base64(value: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex; protobuf's JSON mapping of bytes fields
    reads base64."""
    if isinstance(value, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else _ids_as_base64(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_ids_as_base64(v) for v in value]
    return value


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver(fake_loop: BackgroundLoop) -> Iterator[Receiver]:
    r = Receiver()
    fake_loop.run(r.start())
    yield r
    fake_loop.run(r.stop())


def _serve(
    serve_gateway: Callable[..., RunningServer],
    p0: FakeUpstream,
    p1: FakeUpstream,
    url: str,
    protocol: str = "http/protobuf",
) -> RunningServer:
    # The best quality first: p0 is always tried first, p1 is the fallback.
    config = fake_config(p0, p1).replace(
        "    model: openai-model-0\n", "    model: openai-model-0\n    quality: 0.9\n"
    )
    config += "routes:\n  ordered: {candidates: [chat], strategy: quality}\n"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": protocol,
    }
    return serve_gateway(config, env)


async def _trace(receiver: Receiver, request_id: str, count: int) -> list[dict[str, Any]]:
    """The spans of the trace whose request span has this request id (waits for export)."""
    for _ in range(200):
        roots = [s for s in receiver.spans if _request_id(s) == request_id]
        if roots:
            trace_id = roots[0]["trace_id"]
            spans = [s for s in receiver.spans if s["trace_id"] == trace_id]
            if len(spans) >= count:
                return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"no complete trace for {request_id}: {receiver.spans}")


def _request_id(span: dict[str, Any]) -> Any:
    return span["attributes"].get("hybridfast.request_id")


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(
        (s for s in spans if s["parent_id"] == parent["span_id"]), key=lambda s: s["start"]
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
async def test_a_fallback_is_one_trace_with_an_attempt_span_per_deployment(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    receiver: Receiver,
    protocol: str,
) -> None:
    fake_openai.fail(503, times=1)
    server = _serve(serve_gateway, fake_openai, fake_anthropic, receiver.url, protocol)
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="ordered",
        messages=[{"role": "user", "content": "SECRET-PROMPT-TEXT fall back please"}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    request_id = raw.headers["x-hybridfast-request-id"]
    spans = await _trace(receiver, request_id, 3)

    root = next(s for s in spans if s["attributes"].get("hybridfast.request_id") == request_id)
    assert root["trace_id"] == TRACE_ID
    assert root["parent_id"] == PARENT_ID
    assert root["service"] == "gateway-under-test"
    a = root["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "ordered"
    assert a["gen_ai.response.model"] == "anthropic-model-1"
    assert a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] > 0
    assert "gen_ai.usage.cache_read.input_tokens" in a
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["hybridfast.deployment"] == "chat#1"
    assert a["hybridfast.fallbacks"] == 1
    assert a["hybridfast.cost_usd"] == raw.headers["x-hybridfast-cost-usd"]

    attempts = [s for s in _children(spans, root) if "hybridfast.attempt" in s["attributes"]]
    assert [s["attributes"]["hybridfast.deployment"] for s in attempts] == ["chat#0", "chat#1"]
    failed, answered = attempts
    assert failed["attributes"]["hybridfast.outcome"] == "failed"
    assert failed["attributes"]["hybridfast.fallback"] is False
    assert failed["attributes"]["gen_ai.provider.name"] == "openai"
    assert failed["status"] == 2  # STATUS_CODE_ERROR
    assert answered["attributes"]["hybridfast.outcome"] == "ok"
    assert answered["attributes"]["hybridfast.fallback"] is True
    assert answered["attributes"]["gen_ai.provider.name"] == "anthropic"
    assert answered["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert root["start"] <= failed["start"] <= answered["start"] <= root["end"]

    # Before the first attempt: the cache lookup and the route decision; after the last:
    # the ledger settle. All children of the request span, in order.
    steps = {
        s["name"]: s for s in _children(spans, root) if "hybridfast.attempt" not in s["attributes"]
    }
    assert set(steps) == {"cache lookup", "route", "ledger settle"}, sorted(steps)
    lookup, route, settle = steps["cache lookup"], steps["route"], steps["ledger settle"]
    assert route["attributes"]["hybridfast.cache"] == a["hybridfast.cache"]
    assert root["start"] <= lookup["start"] <= lookup["end"] <= route["start"]
    assert route["end"] <= failed["start"]
    assert answered["end"] <= settle["start"] <= settle["end"] <= root["end"]

    # Each upstream call carried its attempt span as the parent of whatever it traces.
    sent = fake_anthropic.requests[-1].headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{answered['span_id']}-01"
    assert set(receiver.encodings) == {"json" if protocol == "http/json" else "protobuf"}
    # No prompt text, no key.
    text = repr(spans)
    assert "SECRET-PROMPT-TEXT" not in text
    assert "test-key" not in text


async def test_a_recovered_stream_marks_the_continuing_attempt(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    receiver: Receiver,
) -> None:
    fake_openai.cut(3)
    server = _serve(serve_gateway, fake_openai, fake_anthropic, receiver.url)
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    async with client.chat.completions.with_streaming_response.create(
        model="ordered",
        messages=[{"role": "user", "content": "a long story"}],
        stream=True,
    ) as response:
        request_id = response.headers["x-hybridfast-request-id"]
        async for _ in response.iter_lines():
            pass
    spans = await _trace(receiver, request_id, 3)
    root = next(s for s in spans if s["attributes"].get("hybridfast.request_id") == request_id)
    assert root["parent_id"] == ""  # no traceparent came in: a new trace
    assert root["attributes"]["hybridfast.recovered"] is True
    assert root["attributes"]["hybridfast.stream"] is True
    attempts = [s for s in _children(spans, root) if "hybridfast.attempt" in s["attributes"]]
    assert [s["attributes"]["hybridfast.deployment"] for s in attempts] == ["chat#0", "chat#1"]
    broken, continued = attempts
    assert broken["attributes"]["hybridfast.outcome"] == "failed"
    assert broken["attributes"]["hybridfast.recovery"] is False
    assert continued["attributes"]["hybridfast.recovery"] is True
    assert continued["attributes"]["hybridfast.outcome"] == "ok"


async def test_prompts_and_answers_are_recorded_only_when_the_config_says_so(
    fake_openai: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    receiver: Receiver,
) -> None:
    config = fake_config(fake_openai) + (
        "observability:\n"
        f"  tracing: {{enabled: true, endpoint: '{receiver.url}', record_content: true}}\n"
    )
    server = serve_gateway(config)
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "RECORD-ME please"}]
    )
    request_id = raw.headers["x-hybridfast-request-id"]
    spans = await _trace(receiver, request_id, 2)
    root = next(s for s in spans if _request_id(s) == request_id)
    prompt = json.loads(root["attributes"]["gen_ai.input.messages"])
    assert prompt == [{"role": "user", "content": "RECORD-ME please"}]
    answer = json.loads(root["attributes"]["gen_ai.output.messages"])
    assert answer[0]["role"] == "assistant"
    assert answer[0]["content"] == raw.parse().choices[0].message.content
