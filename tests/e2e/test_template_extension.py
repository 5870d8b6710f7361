"""The gateway's `x_hybridfast` field through a real serve: the Anthropic SDK sends a chain's
variables in it (`extra_body`) as the OpenAI SDK does, and the field never reaches an
upstream, whether the client's body is passed through (same protocol) or translated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anthropic
import openai
import pytest

from tests.e2e.test_chains_stream import ESSAY, MASTER, OUTLINE, _config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

EXTENSION = {"x_hybridfast": {"template_vars": {"topic": "otters"}}}


def test_the_anthropic_sdk_streams_a_chain_with_its_variables(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    fake_openai.set(reply=OUTLINE)
    fake_anthropic.set(reply=ESSAY, chunks=7)
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db"))
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)
    with claude.messages.stream(
        model="chain:essay",
        max_tokens=200,
        messages=[{"role": "user", "content": "go"}],
        extra_body=EXTENSION,
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == ESSAY
    assert final.usage.output_tokens > 0
    assert fake_openai.requests[0].body["messages"][-1]["content"] == (
        "Outline an essay about otters."
    )


def test_the_extension_never_reaches_an_upstream(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db"))
    gpt = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)
    messages: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    for model in ("planner", "writer"):  # an OpenAI-format upstream, an Anthropic-format one
        for stream in (False, True):
            # The same protocol on both sides (the body passed through) and the other
            # (translated), whole and streamed.
            answer = gpt.chat.completions.create(
                model=model, messages=messages, stream=stream, extra_body=EXTENSION
            )
            if stream:
                list(answer)  # type: ignore[arg-type]
                with claude.messages.stream(
                    model=model, max_tokens=50, messages=messages, extra_body=EXTENSION
                ) as events:
                    events.get_final_message()
            else:
                claude.messages.create(
                    model=model, max_tokens=50, messages=messages, extra_body=EXTENSION
                )
    sent = [r.body for r in (*fake_openai.requests, *fake_anthropic.requests)]
    assert len(sent) == 8
    assert [b for b in sent if "x_hybridfast" in b] == []
