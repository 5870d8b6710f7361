"""Prompt templates and chains through a real serve, with the openai SDK as the client: the
rendered prompt reaches the upstream, bad variables are 400s naming them, and a chain of two
steps writes two ledger lines with the chain's request id as parent_id (read from the SQLite
file, the request log's admin API and `hybridfast ledger export --parent-id`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from hybridfast._core import format_usd
from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

PROMPTS = """
prompts:
  templates:
    - name: summarize
      model: chat
      system: "You summarize in {{ words }} words."
      prompt: "Summarize: {{ text }}"
      variables: {text: string, words: integer}
      defaults: {words: 20}
    - name: summarize
      version: 2
      model: chat
      system: "Be terse."
      prompt: "TL;DR {{ input }}"
      variables: {input: string}
    - name: outline
      model: chat
      system: "You write outlines."
      prompt: "Outline an essay about {{ topic }}."
      variables: {topic: string}
    - name: write
      model: chat
      system: "You write essays."
      prompt: "Write the essay from this outline: {{ outline }}"
      variables: {outline: string}
  chains:
    - name: essay
      steps:
        - {template: outline, output: outline}
        - {template: write}
"""


MASTER = "sk-hybridfast-chains-master"


def _ledger_config(fake: FakeUpstream, db: Path) -> str:
    text = fake_config(fake, server=f"  master_key: {MASTER}")
    return text.replace("  backend: memory", f"  backend: sqlite\n  path: {db}") + PROMPTS


def _user_texts(fake: FakeUpstream) -> list[str]:
    return [str(r.body["messages"][-1]["content"]) for r in fake.requests]


def test_template_renders_variables_and_versions(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = serve_gateway(_ledger_config(fake_openai, tmp_path / "ledger.db"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="template:summarize@1",
        messages=[{"role": "user", "content": "(ignored)"}],
        extra_body={"x_hybridfast": {"template_vars": {"text": "a long story"}}},
    )
    assert resp.headers["x-hybridfast-template"] == "summarize@1"
    sent = fake_openai.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "You summarize in 20 words."},
        {"role": "user", "content": "Summarize: a long story"},
    ]
    assert "x_hybridfast" not in sent  # the gateway's own field never goes upstream
    # No version: the highest; `input` comes from the last user message when not sent.
    client.chat.completions.create(
        model="template:summarize", messages=[{"role": "user", "content": "the plot"}]
    )
    assert _user_texts(fake_openai)[-1] == "TL;DR the plot"
    # Streams work the same way.
    chunks = list(
        client.chat.completions.create(
            model="template:summarize", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_template_bad_variables_are_400s_naming_them(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = serve_gateway(_ledger_config(fake_openai, tmp_path / "ledger.db"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    cases = {
        "'text'": {},  # missing
        "'words' must be a integer": {"text": "t", "words": "twenty"},  # ill-typed
        "no variable 'txt'": {"text": "t", "txt": "typo"},  # undeclared
    }
    for needle, variables in cases.items():
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="template:summarize@1",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"x_hybridfast": {"template_vars": variables}},
            )
        body = err.value.body
        assert isinstance(body, dict)
        assert body["code"] == "ERR_TEMPLATE_VARIABLE", body
        assert needle in body["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="template:summarize@9", messages=[{"role": "user", "content": "x"}]
        )
    assert fake_openai.calls == 0  # nothing reached the upstream


def test_chain_of_two_steps_writes_two_ledger_lines(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    server = serve_gateway(_ledger_config(fake_openai, db))
    fake_openai.set(reply="1. intro 2. body")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    resp = client.chat.completions.with_raw_response.create(
        model="chain:essay",
        messages=[{"role": "user", "content": "go"}],
        extra_body={"x_hybridfast": {"template_vars": {"topic": "otters"}}},
    )
    parent = resp.headers["x-hybridfast-request-id"]
    assert resp.headers["x-hybridfast-chain"] == "essay; steps=2"
    assert resp.parse().choices[0].message.content == "1. intro 2. body"
    # Step 2 was given step 1's answer.
    assert _user_texts(fake_openai) == [
        "Outline an essay about otters.",
        "Write the essay from this outline: 1. intro 2. body",
    ]
    # An Anthropic client reaches the same chain (its variables: the chain has none left
    # but `topic`, so that one is refused as missing).
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model="chain:essay", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    # The request log finds both steps by the parent id (rows are written within ~0.2 s).
    logged: list[dict[str, object]] = []
    deadline = time.monotonic() + 10
    while len(logged) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        page = httpx.get(
            server.url + "/admin/requests",
            params={"parent_id": parent},
            headers={"Authorization": f"Bearer {MASTER}"},
            timeout=10,
        )
        assert page.status_code == 200, page.text
        logged = page.json()["data"]
    assert sorted(str(r["request_id"]) for r in logged) == [parent, parent + "-step1"]
    assert {r["parent_id"] for r in logged} == {parent}
    server.stop()  # the ledger is flushed on shutdown
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT request_id, route, status, parent_id FROM ledger_entries "
            "WHERE request_id = ? OR request_id LIKE ? ORDER BY request_id",
            (parent, parent + "-step%"),
        ).fetchall()
    assert rows == [(parent, "chat", 200, parent), (parent + "-step1", "chat", 200, parent)]
    # What the chain cost: the earlier step's ledger cost is in its own header.
    with sqlite3.connect(db) as conn:
        (step1_cost,) = conn.execute(
            "SELECT cost FROM ledger_entries WHERE request_id = ?", (parent + "-step1",)
        ).fetchone()
    assert step1_cost > 0
    assert resp.headers["x-hybridfast-chain-earlier-cost-usd"] == format_usd(step1_cost)
    # The CLI lists the chain's lines by its id.
    cli = [sys.executable, "-m", "hybridfast", "ledger", "--config", str(server.config_path)]
    exported = subprocess.run(
        [*cli, "export", "--parent-id", parent],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert sorted(json.loads(line)["request_id"] for line in exported.splitlines()) == [
        parent,
        parent + "-step1",
    ]
