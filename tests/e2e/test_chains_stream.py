"""A chain whose answer is streamed to the client, through a real serve: step 1 is a whole
request to one upstream (OpenAI's wire format), the last step streams from another
(Anthropic's) to an OpenAI SDK client. The client gets the last step's answer as a real
stream with the chain's headers; the ledger has one line per step under the chain's request
id, each costed from its own upstream's usage; the request log has both rows, the streamed
one marked as a stream. A last step cut off mid-stream is still charged under the chain's
id; a first step that fails is a JSON error before any stream starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-chain-stream-master"
OUTLINE = "1. intro 2. body 3. end"
ESSAY = "Otters hold hands while they sleep, and this essay explains why."


def _config(planner: FakeUpstream, writer: FakeUpstream, db: Path) -> str:
    return f"""
server: {{master_key: {MASTER}}}
providers:
  - {{name: p0, kind: openai, base_url: "{planner.url}", api_key: k0, max_retries: 0}}
  - {{name: p1, kind: anthropic, base_url: "{writer.url}", api_key: k1, max_retries: 0}}
models:
  - {{name: planner, provider: p0, model: small, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  - {{name: writer, provider: p1, model: big, price: {{input_per_mtok: 3, output_per_mtok: 15}}}}
ledger: {{backend: sqlite, path: "{db}"}}
prompts:
  templates:
    - name: outline
      model: planner
      prompt: "Outline an essay about {{{{ topic }}}}."
      variables: {{topic: string}}
    - name: write
      model: writer
      system: "You write essays."
      prompt: "Write the essay from this outline: {{{{ outline }}}}"
      variables: {{outline: string}}
  chains:
    - name: essay
      steps:
        - {{template: outline, output: outline}}
        - {{template: write}}
"""


def _logged(server: RunningServer, parent: str) -> list[dict[str, Any]]:
    """The request log's rows of the chain (written within ~0.2 s of the answer)."""
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(rows) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        page = httpx.get(
            server.url + "/admin/requests",
            params={"parent_id": parent},
            headers={"Authorization": f"Bearer {MASTER}"},
            timeout=10,
        )
        assert page.status_code == 200, page.text
        rows = page.json()["data"]
    return rows


def test_a_streamed_chain_answers_and_records_each_step(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    fake_openai.set(reply=OUTLINE)
    fake_anthropic.set(reply=ESSAY, chunks=7)
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="chain:essay",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"x_hybridfast": {"template_vars": {"topic": "otters"}}},
    ) as resp:
        parent = resp.headers["x-hybridfast-request-id"]
        assert resp.headers["x-hybridfast-chain"] == "essay; steps=2"
        assert resp.headers["x-hybridfast-deployment"] == "writer#0"
        chunks = list(resp.parse())
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 1  # a real stream, not one piece
    assert "".join(d or "" for d in deltas) == ESSAY
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1
    final = chunks[-1].model_extra or {}
    told = final["x_hybridfast"]  # the last event: request id and exact cost
    assert usage[0].completion_tokens > 0

    # Step 1 went whole to the planner; the last step streamed from the writer, given
    # step 1's answer.
    assert [r.body.get("stream", False) for r in fake_openai.requests] == [False]
    assert fake_openai.requests[0].body["messages"][-1]["content"] == (
        "Outline an essay about otters."
    )
    writer = fake_anthropic.requests
    assert [r.body.get("stream") for r in writer] == [True]
    assert writer[0].body["messages"][-1]["content"] == [
        {"type": "text", "text": f"Write the essay from this outline: {OUTLINE}"}
    ]

    logged = {str(r["request_id"]): r for r in _logged(server, parent)}
    assert sorted(logged) == [parent, parent + "-step1"]
    assert {r["parent_id"] for r in logged.values()} == {parent}
    assert (logged[parent]["deployment"], logged[parent]["stream"]) == ("writer#0", True)
    step = logged[parent + "-step1"]
    assert (step["deployment"], step["stream"]) == ("planner#0", False)
    assert {r["status"] for r in logged.values()} == {200}

    lines = _export(server, parent)
    assert sorted(lines) == [parent, parent + "-step1"]
    assert {e["parent_id"] for e in lines.values()} == {parent}
    assert (lines[parent]["deployment"], lines[parent + "-step1"]["deployment"]) == (
        "writer#0",
        "planner#0",
    )
    # Each line is costed from its own step's usage at its own model's prices.
    for request_id, price_in, price_out in ((parent + "-step1", 1, 2), (parent, 3, 15)):
        e = lines[request_id]
        assert e["output_tokens"] > 0
        assert e["status"] == 200
        expected = (e["input_tokens"] * price_in + e["output_tokens"] * price_out) * 1_000_000
        assert e["cost"] == expected
    # The streamed answer's usage and cost are the ones its ledger line recorded (the
    # last step's: step 1 has its own line and cost).
    assert lines[parent]["output_tokens"] == usage[0].completion_tokens
    assert (told["request_id"], told["cost_usd"]) == (parent, lines[parent]["cost_usd"])


def _export(server: RunningServer, parent: str) -> dict[str, dict[str, Any]]:
    """The chain's ledger lines, by `hybridfast ledger export --parent-id`, after a stop."""
    server.stop()  # the ledger is flushed on shutdown
    cli = [sys.executable, "-m", "hybridfast", "ledger", "--config", str(server.config_path)]
    exported = subprocess.run(
        [*cli, "export", "--parent-id", parent], capture_output=True, text=True, check=True
    ).stdout
    return {e["request_id"]: e for e in map(json.loads, exported.splitlines())}


def _post_chain(server: RunningServer) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER}"},
        json={
            "model": "chain:essay",
            "messages": [{"role": "user", "content": "go"}],
            "stream": True,
            "x_hybridfast": {"template_vars": {"topic": "otters"}},
        },
        timeout=30,
    )


def test_a_streamed_chain_cut_off_in_its_last_step_is_still_on_the_books(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    fake_openai.set(reply=OUTLINE)
    fake_anthropic.set(reply=ESSAY, chunks=7, cut_after=3)  # the writer's stream breaks
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db"))
    resp = _post_chain(server)
    assert resp.status_code == 200  # the stream had started
    assert '"code":"ERR_PROVIDER_UNAVAILABLE"' in resp.text.replace(" ", "")
    parent = resp.headers["x-hybridfast-request-id"]
    logged = {str(r["request_id"]): r for r in _logged(server, parent)}
    assert (logged[parent]["status"], logged[parent]["stream"]) == (502, True)
    assert logged[parent + "-step1"]["status"] == 200
    lines = _export(server, parent)
    assert sorted(lines) == [parent, parent + "-step1"]
    # What the writer produced before the cut is charged, under the chain's id.
    cut = lines[parent]
    assert (cut["status"], cut["parent_id"], cut["estimated"]) == (502, parent, True)
    assert cut["output_tokens"] > 0
    assert cut["cost"] == logged[parent]["cost_picos"]


def test_a_streamed_chain_whose_first_step_fails_is_an_error_before_any_stream(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    fake_openai.fail(500)
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db"))
    resp = _post_chain(server)
    assert resp.status_code == 424
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "ERR_CHAIN_STEP_FAILED"
    assert fake_anthropic.calls == 0  # the last step never ran
    parent = resp.headers["x-hybridfast-request-id"]
    logged = {str(r["request_id"]): r for r in _logged(server, parent)}
    assert (logged[parent]["status"], logged[parent]["code"]) == (424, "ERR_CHAIN_STEP_FAILED")
    # The chain's own request stopped before its cache lookup: not a miss in the hit rate.
    assert logged[parent]["cache"] == "bypass"
    assert logged[parent + "-step1"]["status"] == 500
    # The failed step's line is in the ledger under the chain; the chain itself reached no
    # deployment, so it has none.
    lines = _export(server, parent)
    assert list(lines) == [parent + "-step1"]
    assert (lines[parent + "-step1"]["status"], lines[parent + "-step1"]["cost"]) == (500, 0)
