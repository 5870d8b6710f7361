"""Plugins: examples/plugin-package installed with pip (into a --target directory on the
path of the processes started here), discovered by `hybridfast plugins list`, its callback
run after every answer of a real serve and its router ordering a route, its provider
answering and its cache backend keeping the answers of a serve whose config selects them,
both selected anew by a reload; a plugin that fails to import or raises is isolated and
reported, never a 500."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import fake_config
from tests.fakes.server import REPO, RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

MASTER = "mk-plugins-0123456789abcdef"
BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "hybridfast-broken-plugin"
version = "0.0.1"
[project.entry-points."hybridfast.callbacks"]
broken = "hybridfast_broken_plugin:Missing"
[project.entry-points."hybridfast.providers"]
broken-provider = "hybridfast_broken_plugin.missing:Provider"
[tool.setuptools]
packages = ["hybridfast_broken_plugin"]
"""


def _pip_install(source: Path, target: Path, tmp: Path) -> None:
    # A copy: building in place would leave build/ and *.egg-info in the repository.
    work = tmp / f"src-{source.name}"
    shutil.copytree(source, work)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--no-index", "--target", str(target), str(work)],
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plugins")
    target = tmp / "site"
    _pip_install(REPO / "examples" / "plugin-package", target, tmp)
    broken = tmp / "broken"
    (broken / "hybridfast_broken_plugin").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "hybridfast_broken_plugin" / "__init__.py").write_text("x = 1\n")
    _pip_install(broken, target, tmp)
    return target


def _env(plugin_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO)])}


def test_plugins_list_discovers_the_installed_package(plugin_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hybridfast", "plugins", "list", "--json"],
        env={**os.environ, **_env(plugin_path)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = {(p["group"], p["name"]): p for p in orjson.loads(result.stdout)}
    log = found[("hybridfast.callbacks", "jsonl-log")]
    assert log["loaded"] is True
    assert (log["package"], log["version"]) == ("hybridfast-example-plugin", "0.1.0")
    assert found[("hybridfast.routers", "cheapest-first")]["loaded"] is True
    assert found[("hybridfast.routers", "bandit")]["loaded"] is True  # the built-in one
    assert found[("hybridfast.providers", "reverse")]["loaded"] is True
    assert found[("hybridfast.cache_backends", "dict")]["loaded"] is True
    assert "cannot import" in found[("hybridfast.providers", "broken-provider")]["error"]
    broken = found[("hybridfast.callbacks", "broken")]
    assert broken["loaded"] is False
    assert "has no on_answer" in broken["error"] or "Missing" in broken["error"]
    assert result.returncode == 1  # a plugin that does not load fails the check


def test_serve_runs_the_callback_and_router_and_isolates_failures(
    plugin_path: Path,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "answers.jsonl"
    text = fake_config(fake_openai, fake_anthropic, server=f"  master_key: {MASTER}")
    # p0 costs more than p1 here, so cheapest-first must answer from p1.
    text = text.replace(
        "price: {input_per_mtok: 1, output_per_mtok: 2}",
        "price: {input_per_mtok: 9, output_per_mtok: 9}",
        1,
    )
    text += (
        "routes:\n  thrifty: {strategy: custom, candidates: [chat], router: cheapest-first}\n"
        "plugins:\n  callbacks: ['*']\n  options:\n"
        f"    jsonl-log: {{path: '{log_file}', fail_on: chat}}\n"
    )
    server = serve_gateway(text, env=_env(plugin_path))
    auth = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
        ok = client.post(
            "/v1/chat/completions",
            json={"model": "thrifty", "messages": [{"role": "user", "content": "hi"}]},
        )
        # The callback raises for this route: the client still gets its answer.
        failing = client.post(
            "/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        )
        report = client.get("/admin/plugins").json()
    assert ok.status_code == 200
    assert ok.headers["x-hybridfast-deployment"] == "chat#1"  # the cheaper one
    assert failing.status_code == 200
    (event,) = [orjson.loads(line) for line in log_file.read_text().splitlines()]
    assert event["request_id"] == ok.headers["x-hybridfast-request-id"]
    assert (event["route"], event["deployment"], event["status"]) == ("thrifty", "chat#1", 200)
    assert event["cost_picos"] > 0
    callbacks = {c["name"]: c for c in report["callbacks"]}
    assert (callbacks["jsonl-log"]["calls"], callbacks["jsonl-log"]["failures"]) == (2, 1)
    assert "told to fail" in callbacks["jsonl-log"]["error"]
    assert callbacks["broken"]["loaded"] is False  # reported, and serve started anyway
    assert any(p["name"] == "cheapest-first" and p["loaded"] for p in report["plugins"])
    assert "told to fail" in server.log()  # logged, with the plugin's name


SELECTED = f"""
server: {{master_key: {MASTER}}}
ledger: {{backend: memory}}
router: {{group_strategy: quality}}
cache:
  backend: dict
  options: {{max_entries: 100}}
  semantic: {{enabled: false}}
providers:
  - {{name: flaky, kind: plugin, plugin: reverse, options: {{fail: true}}}}
models:
  # Tried in quality order: a plugin that does not import, one that raises, one that works.
  - {{name: mirror, provider: broken-provider, model: b, quality: 0.9}}
  - {{name: mirror, provider: flaky, model: f, quality: 0.8}}
  - {{name: mirror, provider: reverse, model: reverse-1, quality: 0.5}}
"""


def test_serve_uses_the_provider_and_cache_plugins_the_config_selects(
    plugin_path: Path, serve_gateway: Callable[..., RunningServer]
) -> None:
    server = serve_gateway(SELECTED, env=_env(plugin_path))
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    hello: Any = [{"role": "user", "content": "hello plugin world"}]
    chat = sdk.chat.completions
    first = chat.with_raw_response.create(model="mirror", messages=hello, temperature=0)
    again = chat.with_raw_response.create(model="mirror", messages=hello, temperature=0)
    streamed = chat.create(
        model="mirror",
        messages=[{"role": "user", "content": "stream me please"}],
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    # Any client protocol reaches a plugin provider, as any other.
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER, max_retries=0)
    message = claude.messages.create(
        model="mirror", max_tokens=50, messages=[{"role": "user", "content": "from anthropic too"}]
    )

    # Answered by the plugin provider, after the two broken ones failed over.
    assert first.parse().choices[0].message.content == "world plugin hello"
    assert first.headers["x-hybridfast-deployment"] == "mirror#2"
    assert first.headers["x-hybridfast-cache"] == "miss"
    # The repeat is an exact hit, from the plugin's store.
    assert again.parse().choices[0].message.content == "world plugin hello"
    assert again.headers["x-hybridfast-cache"] == "hit"
    assert text == "please me stream"
    assert message.content[0].type == "text"
    assert message.content[0].text == "too anthropic from"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 3)

    auth = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
        report = client.get("/admin/plugins").json()
        cache = client.get("/admin/cache").json()
        providers = {p["provider"]: p for p in report["providers"]}
        assert providers["broken-provider"]["loaded"] is False
        assert "cannot import" in providers["broken-provider"]["error"]
        assert "told to fail" in providers["flaky"]["error"]
        assert providers["flaky"]["failures"] == providers["flaky"]["calls"] == 3
        assert providers["reverse"]["failures"] == 0
        assert report["cache_backend"]["name"] == "dict"
        assert report["cache_backend"]["stats"]["hits"] == 1
        assert cache["backend"] == "dict"

        # A reload selects another plugin provider and new store options: no restart.
        reloaded = (
            SELECTED.replace("max_entries: 100", "max_entries: 50").replace(
                "providers:\n",
                "providers:\n  - {name: shouty, kind: plugin, plugin: reverse, "
                "options: {prefix: LOUD}}\n",
            )
            + "  - {name: mirror, provider: shouty, model: s, quality: 1.0}\n"
        )
        applied = client.post("/admin/config", json={"text": reloaded})
        assert applied.status_code == 200, applied.text
        after = client.post(
            "/v1/chat/completions", json={"model": "mirror", "messages": hello, "temperature": 0}
        )
        report = client.get("/admin/plugins").json()
    assert after.json()["choices"][0]["message"]["content"] == "LOUD world plugin hello"
    assert after.headers["x-hybridfast-deployment"] == "mirror#3"
    assert after.headers["x-hybridfast-cache"] == "miss"  # a new store
    assert report["cache_backend"]["stats"] == {"entries": 1, "gets": 1, "hits": 0, "sets": 1}
    assert server.process.poll() is None
    log = server.log()  # each failure logged, with the plugin's name and why
    assert "plugin broken-provider not loaded" in log
    assert "plugin reverse raised RuntimeError: flaky: told to fail" in log


def test_config_check_names_the_installed_plugins(plugin_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "hybridfast.yaml"
    config.write_text(SELECTED.replace("provider: reverse,", "provider: revers,"))
    result = subprocess.run(
        [sys.executable, "-m", "hybridfast", "config", "check", str(config)],
        env={**os.environ, **_env(plugin_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "models[2].provider" in result.stderr
    assert "unknown provider 'revers'" in result.stderr
    assert "reverse" in result.stderr.split("provider plugins installed:")[1]
