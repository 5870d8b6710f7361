"""Prompt templates: typed variables, versions, the sandbox, template files, and
`hybridfast prompts lint|list` through the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import orjson
import pytest

from hybridfast.cli import main
from hybridfast.config import TemplateConfig, parse_config
from hybridfast.errors import ConfigError, InvalidRequest, ModelNotFound
from hybridfast.experiments.templates import Library

CONFIG = textwrap.dedent(
    """
    providers:
      - {name: oa, kind: openai, api_key: sk-test-not-a-key}
    models:
      - {name: cheap, provider: oa, model: gpt-4.1-mini,
         price: {input_per_mtok: 0.4, output_per_mtok: 1.6}}
      - {name: smart, provider: oa, model: gpt-4.1, price: {input_per_mtok: 2, output_per_mtok: 8}}
    routes:
      any: {strategy: cost, candidates: [cheap, smart]}
    prompts:
      templates:
        - {name: good, model: any, system: "Be brief.", prompt: "Summarize {{ text }}",
           variables: {text: string}, max_tokens: 100}
        - {name: sloppy, model: nowhere, prompt: "Hi {{ name }} {{ oops }}",
           variables: {name: string, unused: integer}}
      chains:
        - {name: two, steps: [{template: good, output: text}, {template: good, model: smart}]}
    """
)


def _library(*templates: dict[str, object]) -> Library:
    return Library((f"t[{i}]", msgspec.convert(t, TemplateConfig)) for i, t in enumerate(templates))


def test_variables_are_typed_and_named_in_errors() -> None:
    lib = _library(
        {
            "name": "t",
            "model": "m",
            "prompt": "{{ n }} x {{ flag }}",
            "variables": {"n": "integer", "flag": "boolean"},
        }
    )
    t = lib.get("t")
    assert t.render(t.variables({"n": 3, "flag": True}, [])) == [
        {"role": "user", "content": "3 x True"}
    ]
    with pytest.raises(InvalidRequest, match="'n' must be a integer") as err:
        t.variables({"n": True, "flag": True}, [])  # a JSON true is not an integer
    assert err.value.code == "ERR_TEMPLATE_VARIABLE"
    with pytest.raises(InvalidRequest, match="needs the variable 'flag'"):
        t.variables({"n": 1}, [])


def test_versions_and_unknown_names() -> None:
    lib = _library(
        {"name": "t", "model": "m", "prompt": "one"},
        {"name": "t", "version": 3, "model": "m", "prompt": "three"},
    )
    assert lib.get("t").key == "t@3"
    assert lib.get("t@1").key == "t@1"
    with pytest.raises(ModelNotFound, match="no version '2'"):
        lib.get("t@2")
    with pytest.raises(ModelNotFound, match="no template 'u'"):
        lib.get("u")
    with pytest.raises(ConfigError, match="defined twice"):
        _library(
            {"name": "t", "model": "m", "prompt": "a"}, {"name": "t", "model": "m", "prompt": "b"}
        )


def test_the_sandbox_refuses_unsafe_operations() -> None:
    lib = _library(
        {
            "name": "t",
            "model": "m",
            "prompt": "{{ text.__class__.__mro__[1].__subclasses__() }}",
            "variables": {"text": "string"},
        }
    )
    t = lib.get("t")
    with pytest.raises(InvalidRequest) as err:
        t.render(t.variables({"text": "x"}, []))
    assert err.value.code == "ERR_TEMPLATE_RENDER"


def test_syntax_errors_and_bad_defaults_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"t\[0\]\.prompt: line 1"):
        _library({"name": "t", "model": "m", "prompt": "{{ unclosed"})
    with pytest.raises(ConfigError, match=r"defaults\.n: must be a integer"):
        _library(
            {
                "name": "t",
                "model": "m",
                "prompt": "{{ n }}",
                "variables": {"n": "integer"},
                "defaults": {"n": "x"},
            }
        )


def test_templates_load_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "- {name: a, model: m, prompt: 'A {{ input }}', variables: {input: string}}\n"
        "- {name: a, version: 2, model: m, prompt: 'A2'}\n"
    )
    (tmp_path / "b.yml").write_text("name: b\nmodel: m\nprompt: B\n")
    config = parse_config(f"prompts: {{dirs: [{tmp_path}]}}").config
    lib = Library.from_config(config)
    assert [t.key for t in lib.all()] == ["a@1", "a@2", "b@1"]
    t = lib.get("a@1")  # `input` defaults to the last user message
    messages = [{"role": "user", "content": "first"}, {"role": "user", "content": "last"}]
    assert t.render(t.variables({}, messages))[0]["content"] == "A last"


def test_lint_cli_gives_suggestions_and_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hybridfast.yaml"
    path.write_text(CONFIG)
    assert main(["prompts", "lint", "--config", str(path), "--json"]) == 1  # errors: exit 1
    reports = {r["template"]: r for r in orjson.loads(capsys.readouterr().out)}
    good, sloppy = reports["good@1"], reports["sloppy@1"]
    assert good["findings"] == []
    # The cheaper candidate first, and its price is the config's: 0.4 and 1.6 $/Mtok.
    cheap, smart = good["costs"]
    assert (cheap["deployment"], smart["deployment"]) == ("cheap#0", "smart#0")
    assert cheap["output_tokens"] == 100
    assert cheap["cost_picos"] == cheap["input_tokens"] * 400_000 + 100 * 1_600_000
    assert smart["cost_picos"] > cheap["cost_picos"]
    messages = [f["message"] for f in sloppy["findings"]]
    assert messages == [
        "no system prompt",
        "variable 'unused' is declared but the text never uses it",
        "the text uses 'oops', which is not declared",
        "no deployment serves the model 'nowhere'",
    ]
    assert all(f["suggestion"] for f in sloppy["findings"])


def test_list_cli_shows_templates_and_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hybridfast.yaml"
    path.write_text(CONFIG)
    assert main(["prompts", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "template:good@1  -> any  (text: string)" in out
    assert "chain:two  good@1 -> any | good@1 -> smart" in out


def test_a_chain_naming_an_unknown_template_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "hybridfast.yaml"
    path.write_text(CONFIG.replace("{template: good, model: smart}", "{template: nope}"))
    assert main(["prompts", "list", "--config", str(path)]) == 2


def test_config_check_compiles_templates_and_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = textwrap.dedent(
        """\
        prompts:
          templates:
            - {name: hi, model: chat, prompt: "Hi {{ who }}", variables: {who: string}}
          chains:
            - {name: twice, steps: [{template: hi}, {template: hi}]}
        """
    )
    path = tmp_path / "hybridfast.yaml"
    path.write_text(good)
    assert main(["config", "check", str(path)]) == 0
    path.write_text(good.replace("Hi {{ who }}", "Hi {{ who "))
    assert main(["config", "check", str(path)]) == 2
    assert "prompts.templates[0].prompt" in capsys.readouterr().err
    path.write_text(good.replace("{template: hi}]", "{template: nope}]"))
    assert main(["config", "check", str(path)]) == 2
    assert "prompts.chains[0].steps[1].template" in capsys.readouterr().err
