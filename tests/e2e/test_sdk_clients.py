"""The official `openai` and `anthropic` SDKs against a real `python -m hybridfast serve`
process, over fake upstreams of every kind: what a user's code sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.background import BackgroundLoop
from tests.fakes.server import RunningServer, start_server

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-test-master"


@pytest.fixture(scope="module")
def fakes(fake_loop: BackgroundLoop) -> Iterator[dict[str, FakeUpstream]]:
    started = {kind: FakeUpstream(kind) for kind in ("openai", "anthropic", "ollama")}
    for fake in started.values():
        fake_loop.run(fake.start())
    yield started
    for fake in started.values():
        fake_loop.run(fake.stop())


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeUpstream]) -> Iterator[RunningServer]:
    # One group per upstream kind (`via-openai`, ...) plus `chat` with all three in order.
    o, a, ol = fakes["openai"], fakes["anthropic"], fakes["ollama"]
    text = fake_config(o, a, ol, server=f"  master_key: {MASTER}")
    for i, kind in enumerate(("openai", "anthropic", "ollama")):
        text = text.replace(
            "models:\n",
            f"models:\n  - {{name: via-{kind}, provider: p{i}, "
            f"model: m-{kind}, capabilities: [tools]}}\n",
            1,
        )
    with start_server(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


def oa(server: RunningServer, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def an(server: RunningServer, key: str = MASTER) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


KINDS = ["openai", "anthropic", "ollama"]


@pytest.mark.parametrize("kind", KINDS)
def test_openai_sdk(server: RunningServer, kind: str) -> None:
    client = oa(server)
    raw = client.chat.completions.with_raw_response.create(
        model=f"via-{kind}", messages=[{"role": "user", "content": "Hello"}], max_tokens=20
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 9
    assert raw.headers["x-hybridfast-deployment"] == f"via-{kind}#0"
    assert raw.headers["x-hybridfast-cache"] in ("miss", "hit", "semantic-hit", "bypass")
    stream = client.chat.completions.create(
        model=f"via-{kind}",
        messages=[{"role": "user", "content": "Hello again"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage: Any = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == DEFAULT_REPLY
    assert usage is not None
    assert usage.completion_tokens == 9


@pytest.mark.parametrize("kind", KINDS)
def test_anthropic_sdk(server: RunningServer, kind: str) -> None:
    client = an(server)
    raw = client.messages.with_raw_response.create(
        model=f"via-{kind}",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 9
    assert raw.headers["x-hybridfast-deployment"] == f"via-{kind}#0"
    with client.messages.stream(
        model=f"via-{kind}", max_tokens=50, messages=[{"role": "user", "content": "Once more"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_REPLY
    assert final.usage.output_tokens == 9
    assert final.stop_reason == "end_turn"


def test_sdk_tool_calls(server: RunningServer, fakes: dict[str, FakeUpstream]) -> None:
    fakes["anthropic"].set(tool_call={"name": "lookup", "arguments": {"q": "x"}})
    completion = oa(server).chat.completions.create(
        model="via-anthropic",
        messages=[{"role": "user", "content": "look it up"}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_sdk_errors(server: RunningServer, fakes: dict[str, FakeUpstream]) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        oa(server).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.code == "ERR_MODEL_NOT_FOUND"
    with pytest.raises(openai.AuthenticationError):
        oa(server, key="wrong").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.AuthenticationError):
        an(server, key="wrong").messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError):
        oa(server).chat.completions.create(model="chat", messages=[])
    for fake in fakes.values():
        fake.fail(500)
    with pytest.raises(anthropic.InternalServerError) as unavailable:
        an(server).messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "ERR_PROVIDER_UNAVAILABLE" in str(unavailable.value)
    assert MASTER not in str(unavailable.value)
    assert "test-key" not in server.log()


def test_fallback_through_a_real_server(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].fail(529)
    fakes["anthropic"].cut(2)
    stream = oa(server).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    # chat#0 (openai) refused; chat#1 (anthropic) broke after two pieces; chat#2 (ollama)
    # continued it.
    assert text.startswith("The quick")
    assert text.endswith(DEFAULT_REPLY)
    assert fakes["ollama"].requests[-1].body["messages"][-2]["role"] == "assistant"


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_anthropic_sdk_streams_tool_use_from_other_protocols(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    fakes[kind].set(tool_call={"name": "lookup", "arguments": {"q": "cats", "n": 2}})
    with an(server).messages.stream(
        model=f"via-{kind}",
        max_tokens=50,
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "find cats"}],
    ) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use"
    assert block.name == "lookup"
    assert block.input == {"q": "cats", "n": 2}
    assert final.stop_reason == "tool_use"


def test_openai_sdk_streams_tool_calls_from_anthropic(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["anthropic"].set(tool_call={"name": "lookup", "arguments": {"q": "dogs"}})
    client = oa(server)
    with client.chat.completions.stream(
        model="via-anthropic",
        messages=[{"role": "user", "content": "find dogs"}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert call.function.arguments == '{"q":"dogs"}'  # type: ignore[union-attr]
