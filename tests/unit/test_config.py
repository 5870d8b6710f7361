"""Config loading: interpolation, typing, and errors that name file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridfast.config import Config, load_config, parse_config
from hybridfast.errors import ConfigError

# Shaped like an OpenAI project key, and obviously not one.
FAKE_KEY = "sk-proj-" + "x1" * 12
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

ISSUE_EXAMPLE = """\
server:   {host: 127.0.0.1, port: 8080, master_key: ${HYBRIDFAST_MASTER_KEY:-}}
providers:                     # one per upstream endpoint
  - {name: openai, kind: openai, base_url: https://api.openai.com/v1, api_key: ${OPENAI_API_KEY}}
  - {name: claude, kind: anthropic, api_key: ${ANTHROPIC_API_KEY}}
  - {name: local, kind: ollama, base_url: http://127.0.0.1:11434}
models:                        # deployments; several may share a name (a group)
  - {name: fast, provider: local, model: llama3.2:3b, quality: 0.55}
  - {name: smart, provider: claude, model: claude-sonnet-4-5, quality: 0.9}
  - {name: smart, provider: openai, model: gpt-4.1, quality: 0.88,
     price: {input_per_mtok: 2.0, output_per_mtok: 8.0}}
routes:                        # virtual model names that the router resolves
  auto: {strategy: balanced, candidates: [fast, smart]}
"""


def test_the_issue_example_loads_with_flow_mapping_interpolation() -> None:
    env = {"OPENAI_API_KEY": "from-env", "HYBRIDFAST_MASTER_KEY": "admin"}
    config = parse_config(ISSUE_EXAMPLE, "x.yaml", env).config
    assert config.server.master_key == "admin"
    assert config.provider("openai") is not None
    assert config.provider("openai").api_key == "from-env"  # type: ignore[union-attr]
    assert config.provider("claude").api_key is None  # type: ignore[union-attr]
    assert [m.name for m in config.models] == ["fast", "smart", "smart"]
    assert config.models[2].price is not None
    assert config.models[2].price.input_per_mtok == 2.0
    assert config.routes["auto"].candidates == ["fast", "smart"]


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ("${PORT}", {"PORT": "9000"}, 9000),  # plain scalars are typed after interpolation
        ("${PORT:-8181}", {}, 8181),
    ],
)
def test_interpolated_scalars_get_yaml_types(raw: str, env: dict[str, str], expected: int) -> None:
    assert parse_config(f"server: {{port: {raw}}}\n", "x.yaml", env).config.server.port == expected


def test_quoted_interpolation_stays_a_string() -> None:
    config = parse_config("server: {host: '${H:-0}', port: ${P:-x}}\n", "x.yaml", {"P": "7"})
    assert config.config.server.host == "0"
    with pytest.raises(ConfigError, match=r"x.yaml:1: server.port: Expected `int`, got `str`"):
        parse_config("server: {port: ${P:-x}}\n", "x.yaml", {})


def test_an_environment_value_cannot_change_the_document_structure() -> None:
    env = {"EVIL": "x}, port: 1, {"}
    config = parse_config("server: {host: ${EVIL}}\n", "x.yaml", env).config
    assert config.server.host == "x}, port: 1, {"
    assert config.server.port == 8080


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            ISSUE_EXAMPLE.replace("input_per_mtok: 2.0", "input_per_mtok: two"),
            r"x.yaml:10: models\[2\].price.input_per_mtok: Expected `float`, got `str`",
        ),
        (
            ISSUE_EXAMPLE.replace("quality: 0.9}", "quality: 0.9, colour: red}"),
            r"x.yaml:8: models\[1\].colour: Object contains unknown field `colour`",
        ),
        (
            ISSUE_EXAMPLE.replace("[fast, smart]", "[fast, smrt]"),
            r"x.yaml:12: routes.auto.candidates\[1\]: unknown model or route 'smrt'",
        ),
        (
            ISSUE_EXAMPLE.replace("provider: claude,", "provider: nobody,"),
            r"x.yaml:8: models\[1\].provider: unknown provider 'nobody'",
        ),
        (
            ISSUE_EXAMPLE.replace("kind: anthropic", "kind: antropic"),
            r"x.yaml:4: providers\[1\].kind: Invalid enum value 'antropic'",
        ),
        (
            "models:\n  - {name: a}\n",
            r"x.yaml:2: models\[0\].provider: Object missing required field `provider`",
        ),
        ("server: [1\n", r"x.yaml:2: invalid YAML"),
        ("- 1\n", r"x.yaml:1: the top level must be a mapping"),
        ("budgets: [{scope: team, limit_usd: 5}]\n", r"budgets\[0\].name: a team budget needs"),
        (
            "routes: {ab: {strategy: weighted, candidates: [ab]}}\n",
            r"routes.ab.candidates\[0\]: unknown model or route 'ab'",
        ),
    ],
)
def test_errors_name_file_line_and_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(text, "x.yaml", {})
    assert info.value.code == "ERR_CONFIG"


def test_a_literal_secret_warns_and_suggests_interpolation() -> None:
    text = f"providers:\n  - {{name: o, kind: openai, api_key: {FAKE_KEY}}}\n"
    loaded = parse_config(text, "x.yaml", {})
    assert len(loaded.warnings) == 1
    assert "x.yaml:2: providers[0].api_key holds a literal secret" in loaded.warnings[0]
    assert "sk-proj" not in loaded.warnings[0]
    assert (
        parse_config(
            text.replace(FAKE_KEY, "${K}"),
            "x.yaml",
            {"K": FAKE_KEY},
        ).warnings
        == []
    )


def test_search_order_explicit_then_env_then_cwd_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}).source == "<defaults>"
    (tmp_path / "hybridfast.yaml").write_text("server: {port: 1111}\n")
    assert load_config(None, {}).config.server.port == 1111
    other = tmp_path / "other.yaml"
    other.write_text("server: {port: 2222}\n")
    assert load_config(None, {"HYBRIDFAST_CONFIG": str(other)}).config.server.port == 2222
    third = tmp_path / "third.yaml"
    third.write_text("server: {port: 3333}\n")
    assert load_config(str(third), {"HYBRIDFAST_CONFIG": str(other)}).config.server.port == 3333
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path / "missing.yaml"), {})


def test_defaults_from_the_environment() -> None:
    bare = Config.from_environment({})
    assert [p.kind for p in bare.providers] == ["ollama"]
    assert bare.routes == {}
    both = Config.from_environment(
        {"OPENAI_API_KEY": "k1", "ANTHROPIC_API_KEY": "k2", "OLLAMA_HOST": "10.0.0.5:11434"}
    )
    assert {p.name for p in both.providers} == {"openai", "anthropic", "ollama"}
    assert both.provider("ollama").base_url == "http://10.0.0.5:11434"  # type: ignore[union-attr]
    assert "claude-sonnet-4-5" in both.routes["auto"].candidates
    assert "text-embedding-3-small" not in both.routes["auto"].candidates


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_passes_config_check(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybridfast.cli import main

    # As deployed: an example that reads the master key from the environment needs it set
    # (unset, it is a config error rather than a gateway without auth).
    monkeypatch.setenv("HYBRIDFAST_MASTER_KEY", "example-master-key")
    assert main(["config", "check", str(path)]) == 0
