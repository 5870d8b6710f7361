"""Zero-config discovery against fake upstreams that speak the real wire formats (Ollama's
`/api/tags`, OpenAI's `/v1/models`): what is found, the config built from it, servers that
appear and disappear, and that `local` decides `offline` / `local-first` routing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hybridfast.config import Config, RouteConfig, ollama_base_url
from hybridfast.deployments import build_deployments
from hybridfast.discovery import (
    FoundServer,
    Rediscovery,
    apply,
    chat_model_names,
    discover,
    is_embedding_model,
    is_local_url,
    startup_line,
)
from hybridfast.routing import build_router
from hybridfast.types import Caller, RequestFeatures
from tests.fakes.background import BackgroundLoop
from tests.fakes.server import free_port
from tests.fakes.upstream import FakeUpstream


def quiet_env(**extra: str) -> dict[str, str]:
    """An environment in which nothing answers: Ollama and the common ports point at closed
    ports, so a server running on this machine cannot change what a test sees."""
    env = {"OLLAMA_HOST": f"127.0.0.1:{free_port()}", "HYBRIDFAST_DISCOVER_PORTS": ""}
    env.update(extra)
    return env


async def test_nothing_answering_finds_nothing() -> None:
    assert await discover(quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(free_port()))) == []


async def test_ollama_models_become_local_chat_models_and_auto(fake_ollama: FakeUpstream) -> None:
    env = quiet_env(OLLAMA_HOST=fake_ollama.root)
    found = await discover(env)
    assert found == [
        FoundServer(
            "ollama",
            "ollama",
            fake_ollama.root,
            ("llama3.2:latest",),
            (),
            None,
            "OLLAMA_HOST",
        )
    ]
    config = apply(Config.from_environment(env), found)
    assert config.provider("ollama").local is True  # type: ignore[union-attr]
    assert config.routes["auto"].candidates == ["llama3.2:latest"]
    # What people type for Ollama's `:latest` tag.
    assert config.routes["llama3.2"].candidates == ["llama3.2:latest"]
    (deployment,) = build_deployments(config)
    assert (deployment.name, deployment.kind, deployment.local) == (
        "llama3.2:latest",
        "ollama",
        True,
    )


async def test_openai_compatible_server_on_a_common_port(fake_openai: FakeUpstream) -> None:
    found = await discover(quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(fake_openai.port)))
    assert [(f.provider, f.kind, f.base_url, f.chat_models) for f in found] == [
        (f"local-{fake_openai.port}", "openai-compatible", fake_openai.url, ("fake-model",))
    ]


async def test_gateways_own_port_is_not_probed(fake_openai: FakeUpstream) -> None:
    env = quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(fake_openai.port))
    assert await discover(env, skip_ports={fake_openai.port}) == []


async def test_discovery_can_be_turned_off(fake_ollama: FakeUpstream) -> None:
    assert await discover(quiet_env(OLLAMA_HOST=fake_ollama.root, HYBRIDFAST_DISCOVER="off")) == []


async def test_local_openai_base_url_replaces_the_clouds_model_names(
    fake_openai: FakeUpstream,
) -> None:
    # LM Studio's and vLLM's own instructions: point the OpenAI variables at the server.
    env = quiet_env(OPENAI_BASE_URL=fake_openai.url, OPENAI_API_KEY="lm-studio")
    found = await discover(env)
    assert [(f.provider, f.source, f.api_key) for f in found] == [
        ("openai-local", "OPENAI_BASE_URL", "lm-studio")
    ]
    config = apply(Config.from_environment(env), found)
    assert "openai" not in {p.name for p in config.providers}
    assert chat_model_names(config) == ["fake-model"]
    assert config.routes["auto"].candidates == ["fake-model"]


def test_a_local_openai_base_url_is_not_the_openai_cloud() -> None:
    # Even when the server is down at start-up: OpenAI's model names do not exist there.
    local = Config.from_environment(
        quiet_env(OPENAI_API_KEY="lm-studio", OPENAI_BASE_URL="http://localhost:1234/v1")
    )
    assert "openai" not in {p.name for p in local.providers}
    assert "auto" not in local.routes
    cloud = Config.from_environment(
        quiet_env(OPENAI_API_KEY="k", OPENAI_BASE_URL="https://api.groq.com/openai/v1")
    )
    assert cloud.provider("openai").base_url == "https://api.groq.com/openai/v1"  # type: ignore[union-attr]


async def test_cloud_keys_and_local_models_share_auto(fake_ollama: FakeUpstream) -> None:
    env = quiet_env(OLLAMA_HOST=fake_ollama.root, ANTHROPIC_API_KEY="k")
    config = apply(Config.from_environment(env), await discover(env))
    assert config.routes["auto"].candidates == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "llama3.2:latest",
    ]


@pytest.fixture
async def other_gateway() -> AsyncIterator[int]:
    """A server answering `/v1/models` the way a hybridfast gateway does."""

    async def models(request: web.Request) -> web.Response:
        entry = {"id": "auto", "object": "model", "created": 0, "owned_by": "hybridfast"}
        return web.json_response({"object": "list", "data": [entry]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_another_hybridfast_gateway_is_not_a_model_server(other_gateway: int) -> None:
    assert await discover(quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(other_gateway))) == []


def test_embedding_models_stay_out_of_auto() -> None:
    assert is_embedding_model("nomic-embed-text:latest")
    assert is_embedding_model("all-minilm:latest", "bert")
    assert not is_embedding_model("llama3.2:latest", "llama")
    found = FoundServer(
        "ollama", "ollama", "http://127.0.0.1:11434", ("qwen3:8b",), ("nomic-embed-text:v1.5",)
    )
    config = apply(Config.from_environment(quiet_env()), [found])
    assert config.routes["auto"].candidates == ["qwen3:8b"]
    embed = next(m for m in config.models if m.name == "nomic-embed-text:v1.5")
    assert embed.capabilities == ["embeddings"]


def test_no_chat_model_says_how_to_add_one() -> None:
    config = apply(Config.from_environment(quiet_env()), [])
    assert "auto" not in config.routes
    line = startup_line(config, [], probed=True)
    assert "ERR_NO_CHAT_MODELS" in line
    assert "OLLAMA_HOST" in line
    assert "OPENAI_API_KEY" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "http://127.0.0.1:11434"),
        ("10.0.0.5", "http://10.0.0.5:11434"),
        ("10.0.0.5:11500", "http://10.0.0.5:11500"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8888", "http://127.0.0.1:8888"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://box:11434/", "http://box:11434"),
    ],
)
def test_ollama_host_is_read_like_ollamas_client(value: str, expected: str) -> None:
    assert ollama_base_url({"OLLAMA_HOST": value}) == expected


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:1234/v1", True),
        ("http://localhost:8000/v1", True),
        ("http://192.168.1.20:8000/v1", True),
        ("http://vllm:8000/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://api.groq.com/openai/v1", False),
    ],
)
def test_which_urls_count_as_local(url: str, local: bool) -> None:
    assert is_local_url(url) is local


async def test_a_server_appearing_then_disappearing(fake_loop: BackgroundLoop) -> None:
    port = free_port()
    env = quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(port))
    base = Config.from_environment(env)
    seen: list[list[str]] = []

    async def on_change(config: Config, found: list[FoundServer]) -> None:
        seen.append(chat_model_names(config))

    watcher = Rediscovery(base, await discover(env), on_change, env=env, interval=0)
    assert await watcher.probe_once() is False
    fake = FakeUpstream("openai", port=port)
    fake_loop.run(fake.start())
    try:
        assert await watcher.probe_once() is True
        assert seen == [["fake-model"]]
        assert await watcher.probe_once() is False  # nothing new
    finally:
        fake_loop.run(fake.stop())
    # One missed probe is not enough to take its models away (a busy server answers late).
    assert await watcher.probe_once() is False
    assert await watcher.probe_once() is True
    assert seen == [["fake-model"], []]


async def test_a_change_that_fails_to_apply_is_tried_again(fake_openai: FakeUpstream) -> None:
    env = quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(fake_openai.port))
    calls: list[list[str]] = []

    async def not_open_yet(config: Config, found: list[FoundServer]) -> None:
        calls.append(chat_model_names(config))
        if len(calls) == 1:
            raise RuntimeError("the gateway is still opening")

    watcher = Rediscovery(Config.from_environment(env), [], not_open_yet, env=env, interval=0)
    with pytest.raises(RuntimeError):
        await watcher.probe_once()
    assert watcher.current == {}
    assert await watcher.probe_once() is True
    assert calls == [["fake-model"], ["fake-model"]]
    assert list(watcher.current) == [f"local-{fake_openai.port}"]


def _plan_locality(config: Config, strategy: str) -> list[bool]:
    config.routes["auto"] = RouteConfig(
        strategy=strategy,  # type: ignore[arg-type]
        candidates=config.routes["auto"].candidates,
    )
    router = build_router(config, build_deployments(config))
    plan = router.plan("auto", RequestFeatures("r1", 10), Caller())
    return [d.local for d in plan.deployments]


async def test_discovered_servers_are_local_for_routing(fake_openai: FakeUpstream) -> None:
    # An OpenAI-compatible server is not local by its kind: discovery must say so.
    env = quiet_env(HYBRIDFAST_DISCOVER_PORTS=str(fake_openai.port), OPENAI_API_KEY="k")
    config = apply(Config.from_environment(env), await discover(env))
    assert _plan_locality(config, "offline") == [True]
    first, *rest = _plan_locality(config, "local-first")
    assert first is True
    assert rest
    assert not any(rest)
