"""Client libraries people use, unchanged, against a real `serve` over fake upstreams:
the OpenAI Agents SDK (its default model, a function tool), pydantic-ai, LangChain's OpenAI
(Responses API, structured output, embeddings) and Anthropic chat models.

Installed by the `compat` extra; CI runs this directory (`pytest -m compat`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.server import RunningServer, start_server

pytestmark = [pytest.mark.compat, pytest.mark.slow]

MASTER = "sk-hybridfast-compat-master"
KINDS = ["openai", "anthropic", "ollama"]
agents = pytest.importorskip("agents")


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeUpstream]) -> Iterator[RunningServer]:
    from agents.models import get_default_model

    o, a, ol = fakes["openai"], fakes["anthropic"], fakes["ollama"]
    text = fake_config(o, a, ol, server=f"  master_key: {MASTER}")
    names = [(get_default_model(), 0)] + [(f"via-{k}", i) for i, k in enumerate(KINDS)]
    for name, i in names:
        text = text.replace(
            "models:\n", f"models:\n  - {{name: {name}, provider: p{i}, model: m-{name}}}\n", 1
        )
    with start_server(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


class City(BaseModel):
    city: str
    temperature: int


def test_openai_agents_default_model_with_a_function_tool(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    fakes["openai"].set(
        tool_call={"name": "get_weather", "arguments": {"city": "Paris"}},
        answer_tool_results=True,
        reply="It is sunny in Paris.",
    )

    async def run() -> str:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather])
        result = await Runner.run(agent, "Weather in Paris?")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == "It is sunny in Paris."
    assert seen == ["Paris"]
    first, second = fakes["openai"].requests
    assert first.path.endswith("/responses")  # Responses in, Responses upstream out
    output = second.body["input"][-1]
    assert (output["type"], output["call_id"]) == ("function_call_output", "call_fake0001")
    assert output["output"] == "sunny in Paris"


@pytest.mark.parametrize("kind", KINDS)
def test_pydantic_ai_responses_model(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=server.url + "/v1", api_key=MASTER)
    model = OpenAIResponsesModel(f"via-{kind}", provider=provider)
    assert Agent(model).run_sync("Hello").output == DEFAULT_REPLY
    fakes[kind].set(
        tool_call={"name": "final_result", "arguments": {"city": "Oslo", "temperature": 3}}
    )
    typed = Agent(model, output_type=City).run_sync("Weather in Oslo")
    assert typed.output == City(city="Oslo", temperature=3)


@pytest.mark.parametrize("kind", KINDS)
def test_langchain_openai_responses_api_and_structured_output(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=f"via-{kind}",
        base_url=server.url + "/v1",
        api_key=MASTER,  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
    )
    assert llm.invoke("Hello").text == DEFAULT_REPLY
    fakes[kind].set(reply='{"city": "Oslo", "temperature": 3}')
    structured = llm.with_structured_output(City)
    assert structured.invoke("Weather in Oslo") == City(city="Oslo", temperature=3)


def test_langchain_openai_embeddings_with_minilm(server: RunningServer) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="minilm",
        base_url=server.url + "/v1",
        api_key=MASTER,  # type: ignore[arg-type]
        # Text, not cl100k token ids: MiniLM has its own tokenizer.
        check_embedding_ctx_length=False,
    )
    one, two = embeddings.embed_documents(["a cat sat", "a cat sat"])
    assert len(one) == 384
    assert one == two


def test_langchain_anthropic(server: RunningServer, fakes: dict[str, FakeUpstream]) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(  # type: ignore[call-arg]
        model="via-anthropic",
        base_url=server.url,
        api_key=MASTER,  # type: ignore[arg-type]
        max_retries=0,
    )
    assert llm.invoke("Hello").text == DEFAULT_REPLY
    fakes["anthropic"].set(reply='{"city": "Oslo", "temperature": 3}')
    structured = llm.with_structured_output(City)
    assert structured.invoke("Weather in Oslo") == City(city="Oslo", temperature=3)
    sent = fakes["anthropic"].requests[-1].body
    assert json.dumps(sent).count("City") >= 1


@pytest.mark.filterwarnings("ignore")  # litellm warns about pydantic and asyncio as it runs
def test_litellm_sdk_as_a_client(
    server: RunningServer, fakes: dict[str, FakeUpstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in the compat extra: ~250 MB installed (boto3, its own price tables...). Run it
    # with `pip install litellm`.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    litellm = pytest.importorskip("litellm", reason="litellm is not in the compat extra")
    common = {"api_base": server.url + "/v1", "api_key": MASTER}
    chat = litellm.completion(
        model="openai/via-anthropic", messages=[{"role": "user", "content": "Hi"}], **common
    )
    assert chat.choices[0].message.content == DEFAULT_REPLY
    streamed = litellm.completion(
        model="openai/via-ollama",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        **common,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == DEFAULT_REPLY
    response = litellm.responses(model="openai/via-openai", input="Hello", **common)
    assert response.output[0].content[0].text == DEFAULT_REPLY
    assert fakes["openai"].requests[-1].path.endswith("/responses")
