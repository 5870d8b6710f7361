"""Provider and cache-backend plugins selected by the config: names checked against what is
installed (config check, serve start, reload), a plugin provider answering through the one
pipeline, one that raises or does not load failing over to the next deployment, exact
entries kept in a plugin's store (scoped, invalidated, isolated when it raises), and both
re-resolved when the config is reloaded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hybridfast import entrypoints
from hybridfast.cache import PluginCache
from hybridfast.cli import main
from hybridfast.config import parse_config
from hybridfast.errors import ConfigError, GatewayError
from hybridfast.experiments.plugins import discover
from hybridfast.pipeline.gateway import Gateway
from hybridfast.providers import PluginProvider
from hybridfast.types import Caller

PROVIDERS = """
from hybridfast.types import ChatAnswer, StreamEvent, Usage

class Echo:
    def __init__(self, config):
        self.tag = config.options.get("tag", config.name)
        self.fail = config.options.get("fail", False)
        self.closed = False

    async def chat(self, deployment, request, *, retries=0):
        if self.fail:
            raise RuntimeError("echo told to fail")
        text = request.messages[-1]["content"]
        return ChatAnswer(content=f"{self.tag}: {text}", usage=Usage(3, 2))

    async def stream(self, deployment, request, *, retries=0):
        if self.fail:
            raise RuntimeError("echo told to fail")
        yield [StreamEvent(self.tag), StreamEvent(": streamed")]
        yield [StreamEvent(finish_reason="stop", usage=Usage(3, 2))]

    async def embed(self, deployment, inputs, *, dimensions):
        return [[float(len(text)), 1.0] for text in inputs], Usage(len(inputs), 0)

    async def close(self):
        self.closed = True

from hybridfast.providers import Provider

class Subclass(Provider):
    # The documented way: the built-in adapters' base, with its HTTP client.

    kind = "house"

    def __init__(self, config):
        super().__init__(config, "http://127.0.0.1:9")

    async def chat(self, deployment, request, *, retries=0):
        return ChatAnswer(content=f"{self.kind} {self.base_url} {retries}", usage=Usage(1, 1))

    async def stream(self, deployment, request, *, retries=0):
        yield [StreamEvent(finish_reason="stop")]

def builds_nothing(config):
    return object()

def cannot_build(config):
    raise ValueError("no licence file")
"""

STORES = """
import fnmatch

class Store:
    def __init__(self, fail=False, lie=False):
        self.data, self.fail, self.lie = {}, fail, lie
        self.gets = self.hits = 0

    async def get(self, key):
        self.gets += 1
        if self.fail:
            raise ConnectionError(f"store down at {self.fail}")
        if self.lie and self.data:
            return next(iter(self.data.values()))  # whatever it has, whoever asks
        value = self.data.get(key)
        self.hits += value is not None
        return value

    async def set(self, key, value, ttl_s):
        if self.fail:
            raise ConnectionError(f"store down at {self.fail}")
        self.data[key] = value

    async def delete(self, pattern):
        doomed = [k for k in self.data if fnmatch.fnmatchcase(k, pattern)]
        for k in doomed:
            del self.data[k]
        return len(doomed)

class NoDelete:
    async def get(self, key): ...
    async def set(self, key, value, ttl_s): ...
"""


def _install(site: Path, module: str, body: str, entry_points: str) -> None:
    """A minimal installed distribution: a module and its dist-info with entry points."""
    (site / f"{module}.py").write_text(body)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    _install(
        tmp_path,
        "hf_sel_providers",
        PROVIDERS,
        """\
        [hybridfast.providers]
        hf-echo = hf_sel_providers:Echo
        hf-subclass = hf_sel_providers:Subclass
        hf-nothing = hf_sel_providers:builds_nothing
        hf-unbuildable = hf_sel_providers:cannot_build
        hf-missing = hf_sel_providers:Missing
        """,
    )
    _install(
        tmp_path,
        "hf_sel_stores",
        STORES,
        """\
        [hybridfast.cache_backends]
        hf-store = hf_sel_stores:Store
        hf-nodelete = hf_sel_stores:NoDelete
        """,
    )
    return tmp_path


def _config(text: str) -> Any:
    base = "ledger: {backend: memory}\n"
    if "cache:" not in text:  # no semantic cache: no embedding model to load
        base += "cache: {semantic: {enabled: false}}\n"
    return parse_config(base + textwrap.dedent(text), "test.yaml").config


# --- names checked at config load ------------------------------------------------------


def test_a_model_can_name_an_installed_provider_plugin(site: Path) -> None:
    config = _config("models:\n  - {name: m, provider: hf-echo, model: e1}\n")
    (provider,) = config.providers
    assert (provider.name, provider.kind, provider.plugin) == ("hf-echo", "plugin", "hf-echo")


def test_unknown_provider_names_the_installed_plugins(site: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _config("models:\n  - {name: m, provider: hf-eho, model: e1}\n")
    message = str(err.value)
    assert "test.yaml:" in message
    assert "models[0].provider" in message
    assert "unknown provider 'hf-eho'" in message
    assert "hf-echo" in message  # the installed ones are listed


def test_a_plugin_provider_entry_must_name_an_installed_plugin(site: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _config("providers:\n  - {name: e, kind: plugin, plugin: nope}\n")
    assert "providers[0].plugin" in str(err.value)
    assert "hf-echo" in str(err.value)
    with pytest.raises(ConfigError, match="for kind: plugin"):
        _config("providers:\n  - {name: e, kind: ollama, plugin: hf-echo}\n")


def test_cache_backend_must_be_built_in_or_installed(site: Path) -> None:
    assert _config("cache: {backend: hf-store}\n").cache.backend == "hf-store"
    with pytest.raises(ConfigError) as err:
        _config("cache: {backend: hf-stor}\n")
    assert "cache.backend" in str(err.value)
    assert "memory, redis" in str(err.value)
    assert "hf-store" in str(err.value)
    with pytest.raises(ConfigError, match=r"cache\.options"):
        _config("cache: {backend: memory, options: {x: 1}}\n")


# --- providers ------------------------------------------------------------------------

TWO = """
router: {group_strategy: quality}
providers:
  - {name: first, kind: plugin, plugin: %s, options: {tag: first, fail: %s}}
  - {name: second, kind: plugin, plugin: hf-echo, options: {tag: second}}
models:
  - {name: m, provider: first, model: a, quality: 0.9}
  - {name: m, provider: second, model: b, quality: 0.1}
"""


async def test_a_plugin_provider_answers_whole_and_streamed(site: Path) -> None:
    async with Gateway(_config(TWO % ("hf-echo", "false"))) as gw:
        whole = await gw.chat("hi", model="m")
        streamed = gw.stream("hi", model="m")
        text = await streamed.text()
        first = gw.providers["first"]
    assert (whole.text, whole.deployment) == ("first: hi", "m#0")
    assert whole.usage.input_tokens == 3
    assert text == "first: streamed"
    assert isinstance(first, PluginProvider)
    assert first.impl.closed  # closed with the gateway


async def test_a_plugin_provider_serves_embeddings(site: Path) -> None:
    text = "models:\n  - {name: e, provider: hf-echo, model: e1, capabilities: [embeddings]}\n"
    async with Gateway(_config(text)) as gw:
        result = await gw.embed(["a", "abc"], model="e")
        plain = _config("models:\n  - {name: s, provider: hf-subclass, model: s}\n")
        await gw.reconfigure(plain)
        with pytest.raises(GatewayError) as err:  # a provider without embed: refused, 400
            await gw.embed(["a"], model="s")
    assert result.vectors.tolist() == [[1.0, 1.0], [3.0, 1.0]]
    assert err.value.status == 400
    assert "does not serve embeddings" in err.value.message


async def test_a_provider_subclass_is_a_plugin_provider(site: Path) -> None:
    config = _config("models:\n  - {name: m, provider: hf-subclass, model: s}\n")
    async with Gateway(config) as gw:
        answer = await gw.chat("hi", model="m")
        # The only candidate: the retries of the provider's config are spent on it.
        assert answer.text == "house http://127.0.0.1:9 2"


@pytest.mark.parametrize(
    ("plugin", "why"),
    [
        ("hf-echo", "RuntimeError: echo told to fail"),  # raises on every call
        ("hf-missing", "cannot import"),  # the package is broken
        ("hf-unbuildable", "ValueError: no licence file"),  # its factory raises
        ("hf-nothing", "has no chat, stream"),  # builds something without the interface
    ],
)
async def test_a_failing_plugin_provider_fails_over(site: Path, plugin: str, why: str) -> None:
    async with Gateway(_config(TWO % (plugin, "true"))) as gw:
        whole = await gw.chat("hi", model="m")
        text = await gw.stream("hi", model="m").text()
        report = gw.providers["first"].report()  # type: ignore[attr-defined]
    assert (whole.text, whole.deployment) == ("second: hi", "m#1")
    assert text == "second: streamed"
    assert why in report["error"]
    assert report["failures"] == 2


async def test_plugins_are_resolved_at_config_load_never_per_request(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real = entrypoints.entry_points

    def counting(**kw: Any) -> Any:
        lookups.append(kw.get("group", ""))
        return real(**kw)

    monkeypatch.setattr(entrypoints, "entry_points", counting)
    config = _config(CACHED % ("hf-store", "{}"))
    async with Gateway(config) as gw:
        assert lookups  # the config check and the builds read the entry points...
        lookups.clear()
        for _ in range(3):
            await gw.chat("hi", model="m", temperature=0)
            await gw.stream("hi", model="m").text()
        assert lookups == []  # ...requests never do
        await gw.reconfigure(config)
        assert lookups == ["hybridfast.providers"]  # a reload builds the provider again


async def test_plugin_providers_are_resolved_again_on_reload(site: Path) -> None:
    one = "models:\n  - {name: m, provider: hf-echo, model: a}\n"
    async with Gateway(_config(one)) as gw:
        before = gw.providers["hf-echo"]
        assert (await gw.chat("hi", model="m")).text == "hf-echo: hi"
        # Another plugin selected, and the same one with the same settings: both built anew.
        two = TWO % ("hf-echo", "false") + "  - {name: m2, provider: hf-echo, model: c}\n"
        await gw.reconfigure(_config(two))
        assert gw.providers["hf-echo"] is not before
        assert (await gw.chat("hi", model="m")).text == "first: hi"
        assert (await gw.chat("hi", model="m2")).text == "hf-echo: hi"


# --- cache backends -------------------------------------------------------------------

CACHED = """
cache: {backend: %s, options: %s, semantic: {enabled: false}}
models:
  - {name: m, provider: hf-echo, model: a}
"""


async def test_exact_entries_live_in_the_plugin_store(site: Path) -> None:
    async with Gateway(_config(CACHED % ("hf-store", "{}"))) as gw:
        first = await gw.chat("hi", model="m", temperature=0)
        again = await gw.chat("hi", model="m", temperature=0)
        other = await gw.chat("hi", model="m", temperature=0, caller=Caller(key_name="bob"))
        cache = gw.cache
        assert isinstance(cache, PluginCache)
        store = cache.kv
        assert (first.info.cache, again.info.cache) == ("miss", "hit")
        assert other.info.cache == "miss"  # another tenant: its own entry
        assert (store.gets, store.hits, len(store.data)) == (3, 1, 2)
        assert all(k.count(":") == 2 for k in store.data)
        assert await cache.invalidate(tenant="key:bob") == 1
        assert await cache.invalidate(everything=True) == 1
        assert cache.stats()["plugin"]["loaded"] is True


async def test_a_failing_store_is_a_miss_never_an_error(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The option is a URL with a password: the store's error quotes it.
    url = "memcache://admin:pw-9f8e7d6c5b4a@cache:11211"
    async with Gateway(_config(CACHED % ("hf-store", f"{{fail: '{url}'}}"))) as gw:
        answers = [await gw.chat("hi", model="m", temperature=0) for _ in range(2)]
        error = gw.cache.stats()["plugin"]["error"]  # type: ignore[attr-defined]
    assert [a.info.cache for a in answers] == ["miss", "miss"]
    assert [a.text for a in answers] == ["hf-echo: hi"] * 2
    assert "ConnectionError: store down at" in error
    assert "pw-9f8e7d6c5b4a" not in error + caplog.text
    assert "store down at" in caplog.text


async def test_a_store_that_mixes_up_keys_never_crosses_tenants(site: Path) -> None:
    async with Gateway(_config(CACHED % ("hf-store", "{lie: true}"))) as gw:
        await gw.chat("alice's question", model="m", temperature=0)
        bob = await gw.chat("bob's", model="m", temperature=0, caller=Caller(key_name="bob"))
    assert (bob.info.cache, bob.text) == ("miss", "hf-echo: bob's")


async def test_a_store_without_the_interface_is_reported_and_the_gateway_answers(
    site: Path,
) -> None:
    async with Gateway(_config(CACHED % ("hf-nodelete", "{}"))) as gw:
        answer = await gw.chat("hi", model="m", temperature=0)
        plugin = gw.cache.stats()["plugin"]  # type: ignore[attr-defined]
        assert await gw.cache.invalidate(everything=True) == 0  # type: ignore[attr-defined]
    assert answer.text == "hf-echo: hi"
    assert plugin["loaded"] is False
    assert "has no delete" in plugin["error"]


async def test_reload_switches_the_cache_backend(site: Path) -> None:
    memory = "models:\n  - {name: m, provider: hf-echo, model: a}\n"
    async with Gateway(_config(memory)) as gw:
        await gw.chat("hi", model="m", temperature=0)
        await gw.reconfigure(_config(CACHED % ("hf-store", "{}")))
        assert isinstance(gw.cache, PluginCache)
        kept = gw.cache
        assert (await gw.chat("hi", model="m", temperature=0)).info.cache == "miss"  # new store
        assert (await gw.chat("hi", model="m", temperature=0)).info.cache == "hit"
        await gw.reconfigure(_config(CACHED % ("hf-store", "{}")))
        assert gw.cache is kept  # same backend and options: entries kept
        await gw.reconfigure(_config(memory))
        assert not isinstance(gw.cache, PluginCache)


def test_plugins_list_checks_each_group_interface(site: Path) -> None:
    found = {(i.group, i.name): i for i in discover()}
    assert found["hybridfast.providers", "hf-echo"].loaded
    assert found["hybridfast.providers", "hf-unbuildable"].loaded  # a factory: built later
    assert "cannot import" in (found["hybridfast.providers", "hf-missing"].error or "")
    assert found["hybridfast.cache_backends", "hf-store"].loaded
    assert "has no delete" in (found["hybridfast.cache_backends", "hf-nodelete"].error or "")


def test_plugins_list_builds_what_a_config_selects(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "selects.yaml"
    path.write_text(
        "cache: {backend: hf-store}\n"
        "providers:\n  - {name: u, kind: plugin, plugin: hf-unbuildable}\n"
        "models:\n  - {name: m, provider: hf-echo, model: a}\n"
        "  - {name: m, provider: u, model: b}\n"
    )
    code = main(["plugins", "list", "--config", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    selected = {row["used_by"]: row for row in report["selected"]}
    assert code == 1  # one of them does not build
    assert selected["provider u"]["error"] == "cannot build it: ValueError: no licence file"
    assert selected["provider hf-echo"]["loaded"] is True
    assert (selected["cache.backend"]["name"], selected["cache.backend"]["loaded"]) == (
        "hf-store",
        True,
    )
    assert any(i["name"] == "hf-echo" for i in report["installed"])

    path.write_text(
        "cache: {backend: hf-store}\nmodels:\n  - {name: m, provider: hf-echo, model: a}\n"
    )
    code = main(["plugins", "list", "--config", str(path), "--group", "hybridfast.routers"])
    out = capsys.readouterr().out
    assert code == 0
    assert "selected by" in out
    assert "cache.backend" in out
