"""Fixtures every test can use.

`fake_openai`, `fake_anthropic`, `fake_ollama`: a started `tests.fakes.FakeUpstream` per
test (fresh switches and request log), served from a background thread's event loop so it
answers async tests and real `serve` subprocesses alike. `.url` is the provider base_url.

`serve_gateway`: a factory `serve_gateway(config_yaml, env=None)` that starts a real
`python -m hybridfast serve` subprocess and returns its `RunningServer` (stopped after the
test). For the config, `fake_config(...)` writes the YAML for providers over the fakes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.background import BackgroundLoop
from tests.fakes.server import RunningServer, start_server
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(scope="session")
def fake_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


def _fake(kind: str, loop: BackgroundLoop) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(kind)
    loop.run(fake.start())
    yield fake
    loop.run(fake.stop())


@pytest.fixture
def fake_openai(fake_loop: BackgroundLoop) -> Iterator[FakeUpstream]:
    yield from _fake("openai", fake_loop)


@pytest.fixture
def fake_anthropic(fake_loop: BackgroundLoop) -> Iterator[FakeUpstream]:
    yield from _fake("anthropic", fake_loop)


@pytest.fixture
def fake_ollama(fake_loop: BackgroundLoop) -> Iterator[FakeUpstream]:
    yield from _fake("ollama", fake_loop)


# Every upstream kind the fakes speak, one of each.
FAKE_KINDS = ("openai", "anthropic", "ollama")


@pytest.fixture(scope="module")
def fakes(fake_loop: BackgroundLoop) -> Iterator[dict[str, FakeUpstream]]:
    """One fake upstream of each kind for a whole test module (SDK suites share them)."""
    started = {kind: FakeUpstream(kind) for kind in FAKE_KINDS}
    for fake in started.values():
        fake_loop.run(fake.start())
    yield started
    for fake in started.values():
        fake_loop.run(fake.stop())


def fake_config(
    *fakes: FakeUpstream,
    name: str = "chat",
    extra: str = "",
    server: str = "",
    prices: bool = True,
    capabilities: tuple[str, ...] = ("tools", "vision", "json"),
    http_client: str | None = None,
) -> str:
    """YAML with one provider per fake (named `p0`, `p1`...) and one deployment of model
    group `name` on each, in order (so the in-order router falls back p0 → p1 → ...).
    Prices: $1 / $2 per Mtok in/out; capabilities: tools, vision, json. `server` and
    `extra` are appended YAML; `http_client` picks the providers' client (default: auto,
    which is the fast client for the fakes' http:// URLs)."""
    lines = ["providers:"]
    for i, f in enumerate(fakes):
        lines += [
            f"  - name: p{i}",
            f"    kind: {f.kind}",
            f"    base_url: {f.url}",
            f"    api_key: test-key-{i}",
            "    max_retries: 0",
        ]
        if http_client:
            lines.append(f"    http_client: {http_client}")
    lines.append("models:")
    for i, f in enumerate(fakes):
        lines += [f"  - name: {name}", f"    provider: p{i}", f"    model: {f.kind}-model-{i}"]
        if prices:
            lines += ["    price: {input_per_mtok: 1, output_per_mtok: 2}"]
        if capabilities:
            lines += [f"    capabilities: [{', '.join(capabilities)}]"]
    lines += ["ledger:", "  backend: memory"]
    text = "\n".join(lines) + "\n"
    if server:
        text += "server:\n" + server + "\n"
    return text + extra


@pytest.fixture
def serve_gateway() -> Iterator[Callable[..., RunningServer]]:
    with contextlib.ExitStack() as stack:

        def start(config_text: str, env: dict[str, str] | None = None, **kw: Any) -> RunningServer:
            return stack.enter_context(start_server(config_text, env, **kw))

        yield start
