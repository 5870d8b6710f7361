"""What reaches the upstream and what comes back, with the official SDKs against a real
`serve`: Anthropic → Anthropic passes the body through byte for byte (cache_control, system
blocks, thinking and thinking blocks in history, documents, server tools, is_error,
disable_parallel_tool_use, service_tier, fields the gateway does not know); other upstreams
get a translation, or a 400 naming what they cannot serve; answers carry the upstream's
model and the request id the SDKs read."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.server import RunningServer, start_server

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-test-master"
KINDS = ["openai", "anthropic", "ollama"]
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF").decode()


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeUpstream]) -> Iterator[RunningServer]:
    o, a, ol = fakes["openai"], fakes["anthropic"], fakes["ollama"]
    text = fake_config(o, a, ol, server=f"  master_key: {MASTER}")
    for i, kind in enumerate(KINDS):
        text = text.replace(
            "models:\n",
            f"models:\n  - {{name: via-{kind}, provider: p{i}, model: m-{kind}, "
            "price: {input_per_mtok: 1, output_per_mtok: 2}}\n",
            1,
        )
    with start_server(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


def an(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)


def oa(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)


def rich_request(model: str) -> dict[str, Any]:
    """Everything the old gateway lost on the way to Anthropic."""
    return {
        "model": model,
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Long context " * 50, "cache_control": {"type": "ephemeral"}},
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [
            {"name": "lookup", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "service_tier": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "Summarise, then look it up."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "I should look it up.", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "not found",
                        "is_error": True,
                    }
                ],
            },
        ],
    }


def test_anthropic_to_anthropic_is_byte_for_byte(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    request = rich_request("via-anthropic")
    raw = an(server).messages.with_raw_response.create(
        **request,
        extra_body={"future_field": {"kept": True}},  # unknown to the gateway: survives
    )
    message = raw.parse()
    assert message.content[0].text == DEFAULT_REPLY  # type: ignore[union-attr]
    received = fakes["anthropic"].requests[-1]
    assert received.body == {**request, "model": "m-anthropic", "future_field": {"kept": True}}
    # The SDKs' request id, and the upstream's model in the body (the alias in a header).
    assert message._request_id == raw.headers["request-id"]
    assert raw.headers["request-id"] == raw.headers["x-hybridfast-request-id"]
    assert message.model == "m-anthropic"
    assert raw.headers["x-hybridfast-model"] == "via-anthropic"


def test_anthropic_stream_passes_through_too(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    request = rich_request("via-anthropic")
    with an(server).messages.stream(**request) as stream:
        assert "".join(stream.text_stream) == DEFAULT_REPLY
    assert fakes["anthropic"].requests[-1].body == {
        **request,
        "model": "m-anthropic",
        "stream": True,
    }


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_what_another_upstream_cannot_serve_is_a_400_not_a_silent_drop(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        an(server).messages.create(**rich_request(f"via-{kind}"))
    text = str(refused.value)
    assert "document blocks" in text
    assert "web_search_20250305" in text
    assert not fakes[kind].requests


def test_anthropic_options_are_translated_for_openai(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    an(server).messages.create(
        model="via-openai",
        max_tokens=100,
        thinking={"type": "enabled", "budget_tokens": 4000},
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Hello"},
                ],
            },
            {"role": "user", "content": "Again"},
        ],
    )
    sent = fakes["openai"].requests[-1].body
    assert sent["reasoning_effort"] == "medium"
    assert sent["parallel_tool_calls"] is False
    assert "_hybridfast_native" not in str(sent)  # the pass-through body stays inside


def test_openai_answers_report_the_upstream_model_and_request_id(server: RunningServer) -> None:
    raw = oa(server).chat.completions.with_raw_response.create(
        model="via-ollama", messages=[{"role": "user", "content": "Hi"}]
    )
    completion = raw.parse()
    assert completion.model == "m-ollama"
    assert raw.headers["x-hybridfast-model"] == "via-ollama"
    assert completion._request_id == raw.headers["x-hybridfast-request-id"]
    stream = oa(server).chat.completions.create(
        model="via-anthropic", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert {chunk.model for chunk in stream} == {"m-anthropic"}


def test_openai_answer_fields_survive(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].set(reasoning="Think first.")
    completion = oa(server).chat.completions.create(
        model="via-openai", messages=[{"role": "user", "content": "Hi"}], logprobs=True
    )
    assert fakes["openai"].requests[-1].body["logprobs"] is True
    choice = completion.choices[0]
    assert choice.logprobs is not None
    assert "".join(t.token for t in choice.logprobs.content or ()) == DEFAULT_REPLY
    assert choice.message.annotations == []
    assert (choice.message.model_extra or {})["reasoning_content"] == "Think first."
    assert completion.system_fingerprint == "fp_fake"
    assert completion.service_tier == "default"

    stream = oa(server).chat.completions.create(
        model="via-openai",
        messages=[{"role": "user", "content": "Hi again"}],
        logprobs=True,
        stream=True,
    )
    every = list(stream)
    assert {c.system_fingerprint for c in every} == {"fp_fake"}
    assert {c.service_tier for c in every} == {"default"}
    chunks = [c for c in every if c.choices]
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks
    )
    assert reasoning == "Think first."
    tokens = [
        t.token
        for c in chunks
        if c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or ()
    ]
    assert "".join(tokens) == DEFAULT_REPLY


def test_reasoning_text_and_thinking_blocks_cross_protocols(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    # An OpenAI-compatible reasoning model, asked by an Anthropic client: thinking blocks.
    fakes["openai"].set(reasoning="Let me think.")
    message = an(server).messages.create(
        model="via-openai", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "Let me think."  # type: ignore[union-attr]
    assert message.content[1].text == DEFAULT_REPLY  # type: ignore[union-attr]
    with an(server).messages.stream(
        model="via-openai", max_tokens=100, messages=[{"role": "user", "content": "Again"}]
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think."  # type: ignore[union-attr]

    # Anthropic's thinking, asked by an OpenAI client: reasoning_content.
    fakes["anthropic"].set(reasoning="Pondering.")
    completion = oa(server).chat.completions.create(
        model="via-anthropic", messages=[{"role": "user", "content": "Hi"}]
    )
    assert (completion.choices[0].message.model_extra or {})["reasoning_content"] == "Pondering."
    assert completion.choices[0].message.content == DEFAULT_REPLY
    # And an Anthropic client gets Anthropic's blocks back whole, signature included.
    again = an(server).messages.create(
        model="via-anthropic", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    )
    assert again.content[0].type == "thinking"
    assert again.content[0].signature == "sig_fake"  # type: ignore[union-attr]
    with an(server).messages.stream(
        model="via-anthropic", max_tokens=100, messages=[{"role": "user", "content": "More"}]
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].thinking == "Pondering."  # type: ignore[union-attr]
    assert streamed.content[0].signature == "sig_fake"  # type: ignore[union-attr]
    assert streamed.content[1].text == DEFAULT_REPLY  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", KINDS)
def test_n_answers_passed_through_or_fanned_out_and_charged(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    raw = oa(server).chat.completions.with_raw_response.create(
        model=f"via-{kind}", messages=[{"role": "user", "content": "Two please"}], n=2
    )
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == DEFAULT_REPLY for c in completion.choices)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 18  # both answers are paid for
    # fake_config prices $1/$2 per Mtok in/out: the charge covers both answers' tokens.
    usage = completion.usage
    cost = (usage.prompt_tokens * 1 + usage.completion_tokens * 2) / 1e6
    assert float(raw.headers["x-hybridfast-cost-usd"]) == pytest.approx(cost)
    if kind == "openai":
        assert len(fakes[kind].requests) == 1  # the upstream answered n itself
        assert fakes[kind].requests[0].body["n"] == 2
    else:
        assert len(fakes[kind].requests) == 2  # one call per answer
    with pytest.raises(openai.BadRequestError) as streamed:
        oa(server).chat.completions.create(
            model=f"via-{kind}", messages=[{"role": "user", "content": "x"}], n=2, stream=True
        )
    assert streamed.value.code == "ERR_UNSUPPORTED"
