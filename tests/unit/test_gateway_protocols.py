"""Translation between the client protocols, the gateway's own form and upstream formats;
the stream encoders; line splitting of streamed bodies; the gateway's metric types."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridfast.errors import InvalidRequest
from hybridfast.metrics import Counter, Histogram
from hybridfast.passthrough import native_body
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.recovery import continuation, split_for_replay
from hybridfast.protocols import anthropic as ap
from hybridfast.protocols import openai as op
from hybridfast.providers.base import StreamEvent, iter_lines
from hybridfast.types import ChatRequest, Usage


def anthropic_body(**kw: Any) -> bytes:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return orjson.dumps(body)


def test_anthropic_request_into_gateway_form() -> None:
    req = ap.parse_request(
        anthropic_body(
            system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            stop_sequences=["END"],
            metadata={"user_id": "u7"},
            top_k=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "x"},
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "t1", "name": "look", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [{"type": "text", "text": "a cat"}],
                        }
                    ],
                },
            ],
        )
    )
    assert req.messages[0] == {"role": "system", "content": "Be brief."}
    assert req.messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,QUJD"},
    }
    assistant = req.messages[2]
    assert assistant["content"] == "Let me check."
    assert assistant["tool_calls"][0]["function"] == {"name": "look", "arguments": '{"a":1}'}
    assert req.messages[3] == {"role": "tool", "tool_call_id": "t1", "content": "a cat"}
    assert req.stop == ["END"]
    assert req.user == "u7"
    assert req.extra["top_k"] == 5
    assert req.max_tokens == 10
    # The body itself travels along for an Anthropic upstream (pass-through).
    native = native_body(req, "anthropic")
    assert native is not None
    assert {"type": "text", "text": "Let me check."} in native["messages"][1]["content"]
    assert native_body(req, "openai") is None


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": 0},
        {"max_tokens": True},
        {"messages": [{"role": "user", "content": [{"text": "untyped"}]}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"temperature": 1.5},
        {"stream": "yes"},
        {"model": ""},
    ],
)
def test_anthropic_request_rejections(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        ap.parse_request(anthropic_body(**body))


def test_gateway_form_into_anthropic_upstream() -> None:
    req = ChatRequest(
        model="m",
        messages=[
            {"role": "system", "content": "S1"},
            {"role": "developer", "content": "S2"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "The answer is "},
        ],
        temperature=1.7,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
    )
    body = ap.to_upstream(req, "claude", 1024, stream=True)
    assert body["system"] == "S1\n\nS2"
    assert body["max_tokens"] == 1024
    assert body["temperature"] == 1.0  # Anthropic's range ends at 1
    assert body["stream"] is True
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]  # alternating, merged
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    # The final assistant turn is a prefix to continue, without trailing whitespace.
    assert body["messages"][3]["content"] == [{"type": "text", "text": "The answer is"}]
    assert body["tool_choice"] == {"type": "tool", "name": "f"}


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_anthropic_usage_round_trip(plain: int, read: int, written: int, out: int) -> None:
    usage = Usage(
        input_tokens=plain + read + written,
        output_tokens=out,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )
    wire = ap._usage_json(usage)
    assert wire["input_tokens"] == plain
    assert ap.usage_from_anthropic(wire) == usage


def test_openai_request_keeps_unknown_parameters() -> None:
    req = op.parse_request(
        orjson.dumps(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "seed": 1,
                "max_completion_tokens": 7,
                "stop": "END",
                "stream_options": {"include_usage": True},
                "cache": {"no-cache": True},
            }
        )
    )
    assert req.extra == {"seed": 1}
    assert req.max_tokens == 7
    assert req.stop == ["END"]
    assert req.include_usage
    assert req.cache_control == "no-cache"


def test_openai_stream_encoder() -> None:
    for include_usage in (False, True):
        enc = op.StreamEncoder("r1", "chat", include_usage)
        out = enc.start() + enc.events(
            [
                StreamEvent("Hel"),
                StreamEvent(tool_calls=[{"index": 0, "id": "c", "name": "f", "arguments": '{"a"'}]),
                StreamEvent(finish_reason="tool_calls"),
            ]
        )
        ctx = RequestContext("chat")
        ctx.usage, ctx.cost = Usage(3, 4), 100_000_000_000
        out += enc.end(ctx)
        lines = [line for line in out.split(b"\n\n") if line]
        assert lines[-1] == b"data: [DONE]"
        chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
        assert all(c["id"] == "chatcmpl-r1" and c["model"] == "chat" for c in chunks)
        assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"}
        call = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
        assert call == {
            "index": 0,
            "id": "c",
            "type": "function",
            "function": {"arguments": '{"a"', "name": "f"},
        }
        finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert finish[0]["choices"][0]["finish_reason"] == "tool_calls"
        assert chunks[-1]["x_hybridfast"] == ctx.meta()
        assert chunks[-1]["x_hybridfast"]["cost_usd"] == "0.1"
        if include_usage:
            assert chunks[-1]["choices"] == []
            assert chunks[-1]["usage"]["total_tokens"] == 7
        else:
            assert "usage" not in chunks[-1]


def test_anthropic_stream_encoder_blocks() -> None:
    enc = ap.StreamEncoder("r1", "chat", 5)
    out = enc.start()
    out += enc.events([StreamEvent("Let me look."), StreamEvent(" Sure.")])
    out += enc.events(
        [
            StreamEvent(tool_calls=[{"index": 0, "id": "t", "name": "f", "arguments": ""}]),
            StreamEvent(tool_calls=[{"index": 0, "arguments": '{"q": 1}'}]),
            StreamEvent(tool_calls=[{"index": 1, "id": "u", "name": "g", "arguments": "{}"}]),
            StreamEvent(finish_reason="tool_calls"),
        ]
    )
    ctx = RequestContext("chat")
    ctx.usage = Usage(5, 2)
    out += enc.end(ctx)
    events = [
        (b.split(b"\n")[0][7:].decode(), orjson.loads(b.split(b"\n")[1][6:]))
        for b in out.split(b"\n\n")
        if b
    ]
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use", "tool_use"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


class _Content:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> Any:
        for piece in self.pieces:
            yield piece


@given(st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=20), st.data())
def test_iter_lines_survives_any_network_split(lines: list[bytes], data: Any) -> None:
    raw = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]

    async def collect() -> list[bytes]:
        out: list[bytes] = []
        async for batch in iter_lines(_Content(pieces)):  # type: ignore[arg-type]
            out.extend(batch)
        return out

    assert asyncio.run(collect()) == lines


def test_continuation_request() -> None:
    req = ChatRequest(model="m", messages=[{"role": "user", "content": "q"}])
    anth = continuation(req, "Half an ans", "anthropic")
    assert anth.messages[-1] == {"role": "assistant", "content": "Half an ans"}
    other = continuation(req, "Half an ans", "openai")
    assert other.messages[-2] == {"role": "assistant", "content": "Half an ans"}
    assert other.messages[-1]["role"] == "user"
    assert req.messages == [{"role": "user", "content": "q"}]  # the original is untouched


@given(st.text(max_size=200))
def test_cache_replay_pieces_join_back(text: str) -> None:
    assert "".join(split_for_replay(text)) == text


def test_request_context_headers() -> None:
    info = RequestContext("chat")
    info.cost = 1_234_567
    headers = info.headers()
    assert headers["x-hybridfast-cost-usd"] == "0.000001234567"
    assert headers["x-hybridfast-deployment"] == "none"
    assert info.headers(cost_known=False)["x-hybridfast-cost-usd"] == "pending"
    assert RequestContext().request_id != info.request_id


def test_metric_types() -> None:
    h = Histogram("hybridfast_test_seconds", "t", ["a"], [0.1, 1.0])
    for value in (0.1, 0.5, 2.0):
        h.observe(("x",), value)
    fam = h.family()
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}  # "less than or equal"
    total = [s.value for s in fam.samples if s.name.endswith("_sum")]
    assert total == [pytest.approx(2.6)]
    c = Counter("hybridfast_test", "t", ["a"])
    c.inc(("x",))
    c.inc(("x",), 2)
    assert [s.value for s in c.family().samples if s.name.endswith("_total")] == [3.0]
