"""The Responses API (`/v1/responses`) with the official `openai` SDK against a real
`python -m hybridfast serve`, over fake chat upstreams of every kind: create, stream,
parse, function tools, stored responses and `previous_response_id`, retrieve and delete."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.server import RunningServer, start_server

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-test-master"
OTHER = "sk-hybridfast-test-other"
KINDS = ["openai", "anthropic", "ollama"]


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeUpstream]) -> Iterator[RunningServer]:
    o, a, ol = fakes["openai"], fakes["anthropic"], fakes["ollama"]
    keys = f"keys:\n  - {{key: {OTHER}, name: other}}\n"
    text = fake_config(o, a, ol, server=f"  master_key: {MASTER}", extra=keys)
    for i, kind in enumerate(KINDS):
        text = text.replace(
            "models:\n",
            f"models:\n  - {{name: via-{kind}, provider: p{i}, model: m-{kind}, "
            "price: {input_per_mtok: 1, output_per_mtok: 2}}\n",
            1,
        )
    # Stored responses live in the ledger's SQLite file (relative to serve's working dir).
    text = text.replace("  backend: memory", "  backend: sqlite\n  path: ledger.db")
    with start_server(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


def oa(server: RunningServer, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("kind", KINDS)
def test_create_over_every_upstream(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    raw = oa(server).responses.with_raw_response.create(
        model=f"via-{kind}",
        instructions="Be brief.",
        input=f"Hello from {kind}",
        max_output_tokens=40,
        extra_headers={"Cache-Control": "no-cache"},
    )
    response = raw.parse()
    assert response.output_text == DEFAULT_REPLY
    assert response.status == "completed"
    assert response.model == f"m-{kind}"  # the upstream's model; the alias is a header
    assert raw.headers["x-hybridfast-model"] == f"via-{kind}"
    assert response._request_id == raw.headers["x-hybridfast-request-id"]
    assert response.usage is not None
    assert response.usage.output_tokens == 9
    assert float(raw.headers["x-hybridfast-cost-usd"]) > 0  # the ledger charged it
    sent = fakes[kind].requests[-1].body
    assert json.dumps(sent).count("Be brief.") == 1
    assert f"Hello from {kind}" in json.dumps(sent)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_event_sequence(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    with oa(server).responses.stream(
        model=f"via-{kind}", input=f"Stream from {kind}", store=False
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == DEFAULT_REPLY
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == DEFAULT_REPLY
    assert final.usage is not None
    assert final.usage.output_tokens == 9
    assert final.model == f"m-{kind}"


def test_store_previous_response_retrieve_delete(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    client = oa(server)
    first = client.responses.create(model="via-openai", input="My name is Ada.")
    fakes["anthropic"].set(reply="Your name is Ada.")
    second = client.responses.create(
        model="via-anthropic", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "Your name is Ada."
    # The earlier turn (question and answer) reached the next upstream, in order.
    messages = fakes["anthropic"].requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"][0]["text"] == "My name is Ada."
    assert messages[1]["content"][0]["text"] == DEFAULT_REPLY

    again = client.responses.retrieve(second.id)
    assert again.id == second.id
    assert again.output_text == "Your name is Ada."
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    # Another key cannot see it; the owner can delete it once.
    with pytest.raises(openai.NotFoundError) as other:
        oa(server, OTHER).responses.retrieve(second.id)
    assert other.value.code == "ERR_RESPONSE_NOT_FOUND"
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError) as gone:
        client.responses.create(model="via-openai", input="x", previous_response_id=second.id)
    assert gone.value.code == "ERR_RESPONSE_NOT_FOUND"


def test_streamed_response_is_stored_and_continued(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    client = oa(server)
    with client.responses.stream(model="via-ollama", input="Remember 42.") as stream:
        first = stream.get_final_response()
    client.responses.create(model="via-ollama", input="What number?", previous_response_id=first.id)
    messages = fakes["ollama"].requests[-1].body["messages"]
    assert [m["content"] for m in messages] == ["Remember 42.", DEFAULT_REPLY, "What number?"]


@pytest.mark.parametrize("kind", KINDS)
def test_function_tool_round_trip(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    client = oa(server)
    fakes[kind].set(tool_call={"name": "get_weather", "arguments": {"city": "Paris"}})
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    with client.responses.stream(
        model=f"via-{kind}", input="Weather in Paris?", tools=tools
    ) as stream:
        kinds = [e.type for e in stream]
        first = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    fakes[kind].set(tool_call=None, reply="It is sunny.")
    second = client.responses.create(
        model=f"via-{kind}",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=tools,
    )
    assert second.output_text == "It is sunny."
    sent = json.dumps(fakes[kind].requests[-1].body)
    assert "sunny" in sent
    assert "get_weather" in sent


class Answer(BaseModel):
    city: str
    temperature: int


@pytest.mark.parametrize("kind", KINDS)
def test_parse_structured_output(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    fakes[kind].set(reply='{"city": "Oslo", "temperature": 3}')
    parsed = oa(server).responses.parse(
        model=f"via-{kind}", input="Weather in Oslo as JSON", text_format=Answer
    )
    assert parsed.output_parsed == Answer(city="Oslo", temperature=3)
    sent = fakes[kind].requests[-1].body
    if kind == "openai":  # the Responses API itself: text.format as the client sent it
        fmt = sent["text"]["format"]
        assert fmt["type"] == "json_schema"
        assert fmt["name"] == "Answer"
        schema = fmt["schema"]
    elif kind == "anthropic":
        # Enforced, not dropped: a forced tool whose input schema is the format's schema.
        (tool,) = sent["tools"]
        assert sent["tool_choice"] == {"type": "tool", "name": tool["name"]}
        schema = tool["input_schema"]
    else:
        schema = sent["format"]
    assert schema["properties"]["temperature"]["type"] == "integer"


def test_reasoning_and_parallel_tool_calls_reach_anthropic(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    oa(server).responses.create(
        model="via-anthropic",
        input="Think, then call tools",
        reasoning={"effort": "medium"},
        parallel_tool_calls=False,
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        max_output_tokens=100,
        store=False,
    )
    sent = fakes["anthropic"].requests[-1].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] > 4096  # room for the answer after the thinking budget
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_cache_applies_to_responses(server: RunningServer, fakes: dict[str, FakeUpstream]) -> None:
    client = oa(server)
    calls = fakes["openai"].calls
    # Sampled requests (temperature unset or > 0) are not cached by default.
    ask = {"model": "via-openai", "input": "cache me", "temperature": 0}
    first = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    second = client.responses.with_raw_response.create(**ask)  # type: ignore[arg-type]
    assert first.headers["x-hybridfast-cache"] == "miss"
    assert second.headers["x-hybridfast-cache"] == "hit"
    assert fakes["openai"].calls == calls + 1
    assert second.parse().output_text == DEFAULT_REPLY


def test_bad_input_is_a_4xx_in_openai_shape(server: RunningServer) -> None:
    client = oa(server)
    with pytest.raises(openai.BadRequestError) as no_input:
        client.responses.create(model="via-openai", input=[])
    assert no_input.value.code == "ERR_INVALID_REQUEST"
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model="via-openai", input="search", tools=[{"type": "web_search"}])
    assert hosted.value.code == "ERR_UNSUPPORTED"
    assert "web_search" in str(hosted.value)
    with pytest.raises(openai.NotFoundError) as model:
        client.responses.create(model="no-such-model", input="x")
    assert model.value.code == "ERR_MODEL_NOT_FOUND"


def test_openai_responses_upstream_gets_the_clients_body(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    request = {
        "model": "via-openai",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        "instructions": "Be brief.",
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "metadata": {"team": "blue"},
        "temperature": 0.3,
    }
    response = oa(server).responses.create(
        **request,  # type: ignore[arg-type]
        extra_body={"future_field": 1},
    )
    assert response.output_text == DEFAULT_REPLY
    received = fakes["openai"].requests[-1]
    assert received.path == "/v1/responses"
    # Byte for byte but for what the gateway owns: the model, and storage (the gateway's own).
    assert received.body == {**request, "model": "m-openai", "store": False, "future_field": 1}
    assert response.output[0].id.startswith("msg_fake")  # the upstream's own output items
    with oa(server).responses.stream(**request) as stream:  # type: ignore[arg-type]
        assert stream.get_final_response().output_text == DEFAULT_REPLY
    assert fakes["openai"].requests[-1].body == {
        **request,
        "model": "m-openai",
        "store": False,
        "stream": True,
    }
