"""A new user's first run: `python -m hybridfast serve` with no config file, then the README's
first Python snippet (the official `openai` SDK), exactly as written there but for the port.

- nothing configured: a clear 503 `ERR_NO_CHAT_MODELS` with a hint, and `/readyz` says chat
  is not ready;
- an Ollama (the fake one, speaking Ollama's wire format) on `$OLLAMA_HOST`: an answer;
- the Ollama started after the gateway: found by the background probe, then an answer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fakes.background import BackgroundLoop
from tests.fakes.server import free_port
from tests.fakes.upstream import DEFAULT_REPLY, FakeUpstream

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet(url: str) -> str:
    text = README.read_text()
    start = text.index("```python\n") + len("```python\n")
    snippet = text[start : text.index("```", start)]
    assert "http://127.0.0.1:8080" in snippet
    return snippet.replace("http://127.0.0.1:8080", url)


def run_snippet(url: str) -> str:
    """Runs the README's snippet against `url`; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_snippet(url), "README.md", "exec"), {})
    return out.getvalue()


@dataclass
class Serve:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def zero_config_serve(**env: str) -> Iterator[Serve]:
    """`python -m hybridfast serve` with no config file, no keys, no `hybridfast.yaml` in its
    directory, and only the local servers `env` names (the usual ports are not probed, so a
    server running on this machine cannot change the outcome)."""
    port = free_port()
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HYBRIDFAST_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL")
    }
    full.update({"PYTHONUNBUFFERED": "1", "HYBRIDFAST_DISCOVER_PORTS": ""}, **env)
    workdir = tempfile.mkdtemp(prefix="hybridfast-first-run-")
    log = Path(workdir) / "serve.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "hybridfast", "serve", "--port", str(port)],
            cwd=workdir,
            env=full,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/readyz", timeout=1):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield Serve(url, log)
    finally:
        process.terminate()
        process.wait(10)
    assert "Traceback" not in log.read_text()


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def nothing_answering() -> str:
    return f"127.0.0.1:{free_port()}"


def test_nothing_configured_gets_a_clear_503_with_a_hint() -> None:
    with zero_config_serve(OLLAMA_HOST=nothing_answering()) as serve:
        url = serve.url
        # One line at start-up says so, and how to fix it.
        (line,) = [x for x in serve.log().splitlines() if "no chat model" in x]
        assert "ERR_NO_CHAT_MODELS" in line
        assert "OLLAMA_HOST" in line
        with pytest.raises(openai.APIStatusError) as caught:
            run_snippet(url)
        err = caught.value
        assert err.status_code == 503
        assert err.response.headers["x-should-retry"] == "false"
        body = err.response.json()["error"]
        assert body["code"] == "ERR_NO_CHAT_MODELS"
        assert "OLLAMA_HOST" in body["message"]
        assert "OPENAI_API_KEY" in body["message"]
        # Not the typo's 404: any name gets the same answer while nothing can chat.
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as typo:
            client.chat.completions.create(
                model="gtp-4", messages=[{"role": "user", "content": "hi"}]
            )
        assert typo.value.status_code == 503
        # Anthropic's SDK gets the same, in Anthropic's error shape.
        claude = anthropic.Anthropic(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as messages:
            claude.messages.create(
                model="auto", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        assert messages.value.status_code == 503
        assert messages.value.response.json()["error"]["code"] == "ERR_NO_CHAT_MODELS"

        status, ready = get_json(url + "/readyz")
        assert status == 200
        assert (ready["chat"], ready["embeddings"]) == (False, True)
        status, _ = get_json(url + "/readyz?need=chat")
        assert status == 503


def test_an_ollama_on_ollama_host_answers(fake_ollama: FakeUpstream) -> None:
    with zero_config_serve(OLLAMA_HOST=fake_ollama.root) as serve:
        url = serve.url
        assert f"discovery: ollama at {fake_ollama.root} (1 model)" in serve.log()
        assert run_snippet(url).strip() == DEFAULT_REPLY
        status, ready = get_json(url + "/readyz?need=chat")
        assert (status, ready["chat"]) == (200, True)
        _, models = get_json(url + "/v1/models")
        names = {m["id"] for m in models["data"]}  # type: ignore[attr-defined]
        assert {"llama3.2:latest", "llama3.2", "auto"} <= names
    assert fake_ollama.requests[-1].path == "/api/chat"
    assert fake_ollama.requests[-1].body["model"] == "llama3.2:latest"


def test_an_ollama_started_later_is_found(fake_loop: BackgroundLoop) -> None:
    port = free_port()
    with zero_config_serve(
        OLLAMA_HOST=f"127.0.0.1:{port}", HYBRIDFAST_DISCOVER_INTERVAL_S="0.2"
    ) as serve:
        url = serve.url
        with pytest.raises(openai.APIStatusError):
            run_snippet(url)
        fake = FakeUpstream("ollama", port=port)
        fake_loop.run(fake.start())
        try:
            deadline = time.monotonic() + 20
            while get_json(url + "/readyz?need=chat")[0] != 200:
                assert time.monotonic() < deadline, "the new Ollama was never found"
                time.sleep(0.1)
            assert run_snippet(url).strip() == DEFAULT_REPLY
            assert "discovery: found ollama at" in serve.log()
        finally:
            fake_loop.run(fake.stop())
