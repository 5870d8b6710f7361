"""Templates and chains follow the config reload of a running `serve`: switched on by SIGHUP
without a restart, an edited template file takes effect, a chain added through
`POST /admin/config` answers at once, and a template that does not compile is refused by the
reload (400 `ERR_CONFIG`, or a "reload refused" log line for SIGHUP) with the old set kept."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.server import RunningServer

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-prompts-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def _config(fake: FakeUpstream, prompts: str = "") -> str:
    return fake_config(fake, server=f"  master_key: {MASTER}") + prompts


def _ask(server: RunningServer, model: str, **variables: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if variables:
        body["x_hybridfast"] = {"template_vars": variables}
    return httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)


def _sent(fake: FakeUpstream) -> str:
    return str(fake.requests[-1].body["messages"][-1]["content"])


def _until(check: Callable[[], bool]) -> bool:
    """SIGHUP is handled asynchronously: polls until `check` holds (10 s at most)."""
    deadline = time.monotonic() + 10
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def _template(directory: Path, prompt: str) -> None:
    (directory / "greet.yaml").write_text(
        f"name: greet\nmodel: chat\nprompt: {prompt!r}\nvariables: {{who: string}}\n"
    )


def test_sighup_switches_templates_on_and_picks_up_an_edited_file(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = serve_gateway(_config(fake_openai))
    unknown = _ask(server, "template:greet", who="Ada")
    assert unknown.status_code == 404, unknown.text  # no templates yet

    library = tmp_path / "prompts"
    library.mkdir()
    _template(library, "Hello {{ who }}")
    server.config_path.write_text(_config(fake_openai, f"prompts:\n  dirs: [{library}]\n"))
    server.process.send_signal(signal.SIGHUP)
    assert _until(lambda: _ask(server, "template:greet", who="Ada").status_code == 200)
    assert _sent(fake_openai) == "Hello Ada"

    # The config file is unchanged; the template file is edited: the reload re-reads it.
    _template(library, "Good morning {{ who }}")
    server.process.send_signal(signal.SIGHUP)
    assert _until(
        lambda: (
            _ask(server, "template:greet", who="Ada").status_code == 200
            and _sent(fake_openai) == "Good morning Ada"
        )
    )

    # A file that does not compile: the reload is refused and the running set answers.
    _template(library, "Bye {{ who ")
    server.process.send_signal(signal.SIGHUP)
    assert _until(lambda: "reload refused" in server.log())
    assert "greet.yaml" in server.log()  # the refusal names the template
    assert _ask(server, "template:greet", who="Ada").status_code == 200
    assert _sent(fake_openai) == "Good morning Ada"


def test_admin_config_adds_a_chain_at_once_and_refuses_a_broken_template(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    first = """
prompts:
  templates:
    - {name: outline, model: chat, prompt: "Outline {{ topic }}", variables: {topic: string}}
"""
    server = serve_gateway(_config(fake_openai, first))
    assert _ask(server, "template:outline", topic="otters").status_code == 200
    assert _ask(server, "chain:essay", topic="otters").status_code == 404

    with_chain = (
        first
        + """    - {name: write, model: chat, prompt: "Write: {{ outline }}",
       variables: {outline: string}}
  chains:
    - name: essay
      steps: [{template: outline, output: outline}, {template: write}]
"""
    )
    posted = httpx.post(
        server.url + "/admin/config",
        json={"text": _config(fake_openai, with_chain)},
        headers=AUTH,
        timeout=10,
    )
    assert posted.status_code == 200, posted.text
    fake_openai.set(reply="1. rivers")
    answer = _ask(server, "chain:essay", topic="otters")  # no wait: applied before the answer
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-hybridfast-chain"] == "essay; steps=2"
    assert _sent(fake_openai) == "Write: 1. rivers"

    broken = with_chain.replace("Write: {{ outline }}", "Write: {% if outline %}")
    refused = httpx.post(
        server.url + "/admin/config",
        json={"text": _config(fake_openai, broken)},
        headers=AUTH,
        timeout=10,
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "ERR_CONFIG"
    assert "prompts.templates[1].prompt" in error["message"]
    assert "{% if outline %}" not in server.config_path.read_text()  # the file is unchanged
    assert _ask(server, "chain:essay", topic="otters").status_code == 200  # the old set stays

    # A chain naming a template that does not exist is refused the same way.
    dangling = with_chain.replace("{template: write}", "{template: missing}")
    refused = httpx.post(
        server.url + "/admin/config",
        json={"text": _config(fake_openai, dangling)},
        headers=AUTH,
        timeout=10,
    )
    assert refused.status_code == 400
    assert "prompts.chains[0].steps[1].template" in refused.json()["error"]["message"]
