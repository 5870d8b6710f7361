"""A config built in Python (the in-process API) resolves a provider plugin named directly by a
model (`provider: reverse`) exactly as the same config read from YAML does: the example
package's `reverse` provider answers through `hybridfast.Gateway`, whole and streamed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hybridfast.config import Config, LedgerConfig, ModelConfig, ProviderConfig, parse_config
from hybridfast.pipeline.gateway import Gateway

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-package"


@pytest.fixture
def example_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example package importable, with the entry points its pyproject declares (a
    dist-info as pip would write; tests/e2e/test_plugins.py installs it with pip)."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    info = tmp_path / f"hybridfast_example_plugin-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    sections = [
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items())
        for group, eps in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))


def _python_config() -> Config:
    return Config(
        models=[ModelConfig(name="mirror", provider="reverse", model="reverse-1")],
        ledger=LedgerConfig(backend="memory"),
    )


@pytest.mark.usefixtures("example_installed")
def test_a_python_config_resolves_like_the_yaml_one() -> None:
    yaml = "models:\n  - {name: mirror, provider: reverse, model: reverse-1}\n"
    from_yaml = parse_config(yaml + "ledger: {backend: memory}\n").config
    built = _python_config()
    assert built.providers == from_yaml.providers
    assert built.providers == [ProviderConfig(name="reverse", kind="plugin", plugin="reverse")]
    # A provider configured under that name stays the one used; nothing is added.
    own = ProviderConfig(name="reverse", kind="openai", base_url="http://127.0.0.1:9/v1")
    explicit = Config(
        providers=[own], models=[ModelConfig(name="m", provider="reverse", model="x")]
    )
    assert explicit.providers == [own]


@pytest.mark.usefixtures("example_installed")
async def test_the_in_process_gateway_answers_through_the_plugin() -> None:
    async with Gateway(_python_config()) as gw:
        whole = await gw.chat("one two three", model="mirror")
        streamed = await gw.stream("four five", model="mirror").text()
        report = gw.providers["reverse"].report()  # type: ignore[attr-defined]
    assert (whole.text, whole.deployment) == ("three two one", "mirror#0")
    assert streamed == "five four"
    assert (report["loaded"], report["error"]) == (True, None)


def test_an_unknown_provider_in_python_adds_nothing() -> None:
    # Not installed (the fixture is not used): left for the reference check to report.
    config = Config(models=[ModelConfig(name="m", provider="nowhere", model="x")])
    assert config.providers == []
