"""The endpoints SDKs call besides chat, with the official `openai` and `anthropic` clients
against a real `serve`: `models.retrieve` in each client's shape (404s too),
`messages.count_tokens` (exact from an Anthropic upstream, estimated elsewhere) and the
legacy `completions`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.server import RunningServer, start_server
from tests.fakes.upstream import count_tokens, prompt_text

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-test-master"
KINDS = ["openai", "anthropic", "ollama"]


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeUpstream]) -> Iterator[RunningServer]:
    o, a, ol = fakes["openai"], fakes["anthropic"], fakes["ollama"]
    text = fake_config(o, a, ol, server=f"  master_key: {MASTER}")
    for i, kind in enumerate(KINDS):
        text = text.replace(
            "models:\n",
            f"models:\n  - {{name: via-{kind}, provider: p{i}, model: m-{kind}}}\n",
            1,
        )
    text += "routes:\n  smart: {strategy: quality, candidates: [via-openai, via-anthropic]}\n"
    with start_server(text) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


def oa(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)


def an(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)


def test_models_retrieve_in_each_clients_shape(server: RunningServer) -> None:
    model = oa(server).models.retrieve("via-openai")
    assert model.id == "via-openai"
    assert model.object == "model"
    info = an(server).models.retrieve("smart")
    assert info.id == "smart"
    assert info.type == "model"
    assert info.display_name == "smart"
    assert info.created_at.year >= 2025
    with pytest.raises(openai.NotFoundError) as oa_missing:
        oa(server).models.retrieve("nope")
    assert oa_missing.value.code == "ERR_MODEL_NOT_FOUND"
    with pytest.raises(anthropic.NotFoundError) as an_missing:
        an(server).models.retrieve("nope")
    # Anthropic's own error shape: {"type": "error", "error": {"type": "not_found_error"}}.
    assert an_missing.value.body["type"] == "error"  # type: ignore[index]
    assert an_missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_count_tokens_exact_from_anthropic(
    server: RunningServer, fakes: dict[str, FakeUpstream]
) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Count me", "cache_control": {"type": "ephemeral"}}
            ],
        }
    ]
    raw = an(server).messages.with_raw_response.count_tokens(
        model="via-anthropic", system="Be brief.", messages=messages
    )
    count = raw.parse()
    sent = fakes["anthropic"].requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.body["model"] == "m-anthropic"
    # The body reached the upstream as the client sent it (cache_control included).
    assert sent.body["messages"] == messages
    assert count.input_tokens == count_tokens(prompt_text(sent.body)) + 1000
    assert raw.headers["x-hybridfast-tokens"] == "exact"


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_count_tokens_estimated_elsewhere(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    raw = an(server).messages.with_raw_response.count_tokens(
        model=f"via-{kind}", messages=[{"role": "user", "content": "Count these words please"}]
    )
    assert raw.headers["x-hybridfast-tokens"] == "estimated"
    count = raw.parse()
    assert 3 <= count.input_tokens <= 10
    assert count.model_extra == {"estimated": True}
    assert all(not f.requests for f in fakes.values())


def test_count_tokens_bad_input_and_unknown_model(server: RunningServer) -> None:
    with pytest.raises(anthropic.BadRequestError):
        an(server).messages.count_tokens(model="via-anthropic", messages=[])
    with pytest.raises(anthropic.NotFoundError) as missing:
        an(server).messages.count_tokens(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.mark.parametrize("kind", KINDS)
def test_legacy_completions(
    server: RunningServer, fakes: dict[str, FakeUpstream], kind: str
) -> None:
    client = oa(server)
    completion = client.completions.create(
        model=f"via-{kind}", prompt="Once upon a time", max_tokens=30
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == f"m-{kind}"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 9
    assert "Once upon a time" in str(fakes[kind].requests[-1].body)
    stream = client.completions.create(
        model=f"via-{kind}",
        prompt="Once more",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEFAULT_REPLY
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 9


def test_legacy_completions_refuse_what_a_chat_upstream_cannot_do(server: RunningServer) -> None:
    client = oa(server)
    with pytest.raises(openai.BadRequestError) as tokens:
        client.completions.create(model="via-openai", prompt=[1, 2, 3])
    assert tokens.value.code == "ERR_UNSUPPORTED"
    with pytest.raises(openai.BadRequestError) as suffix:
        client.completions.create(model="via-openai", prompt="def f(", suffix="return x")
    assert suffix.value.code == "ERR_UNSUPPORTED"


def _get(url: str, key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_anthropic_clients_get_their_error_shape_on_every_path(server: RunningServer) -> None:
    for path in ("/v1/nope", "/v1/models/nope"):
        status, body = _get(server.url + path, MASTER)
        assert status == 404
        assert body["type"] == "error"
        assert body["error"]["type"] == "not_found_error"
    status, body = _get(server.url + "/v1/models", "wrong")
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
