"""Custom routers: by dotted path or entry point, ordering what the core let through."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybridfast.config import parse_config
from hybridfast.deployments import build_deployments
from hybridfast.errors import ConfigError, ProviderUnavailable
from hybridfast.routing import Candidate, NativeRouter, build_router, describe_plan
from hybridfast.types import Caller, RequestFeatures

EXAMPLES = Path(__file__).parents[2] / "examples"

CONFIG = """
providers:
  - {name: oa, kind: openai, api_key: test}
  - {name: ol, kind: ollama, base_url: "http://127.0.0.1:1"}
models:
  - {name: big, provider: oa, model: gpt-4.1, quality: 0.9, capabilities: [vision],
     price: {input_per_mtok: 2, output_per_mtok: 8}}
  - {name: mini, provider: oa, model: gpt-4.1-mini, quality: 0.75, capabilities: [tools],
     price: {input_per_mtok: 0.4, output_per_mtok: 1.6}}
  - {name: local, provider: ol, model: llama3, quality: 0.55, capabilities: [json]}
routes:
  auto:
    strategy: custom
    candidates: [big, mini, local]
    router: {router}
    options: {options}
"""


class Reverse:
    """Reverses the core's order and records what it was given."""

    def __init__(self, drop: str | None = None, fail: bool = False) -> None:
        self.drop = drop
        self.fail = fail
        self.seen: list[tuple[str, list[Candidate], RequestFeatures, Caller]] = []

    def order(
        self,
        route: str,
        candidates: Sequence[Candidate],
        features: RequestFeatures,
        caller: Caller,
    ) -> list[str]:
        if self.fail:
            raise RuntimeError("boom")
        self.seen.append((route, list(candidates), features, caller))
        return [c.id for c in reversed(candidates) if c.id != self.drop]


class NoOrder:
    pass


def make(router: str, options: str = "{}") -> NativeRouter:
    text = CONFIG.replace("{router}", router).replace("{options}", options)
    config = parse_config(text).config
    return build_router(config, build_deployments(config))


def feats(**kw: object) -> RequestFeatures:
    kw.setdefault("request_id", "r")
    kw.setdefault("input_tokens", 100)
    return RequestFeatures(**kw)  # type: ignore[arg-type]


def test_dotted_path_router_reorders_what_the_core_let_through() -> None:
    r = make(f"{__name__}:Reverse", "{drop: big#0}")
    caller = Caller(key_name="k")
    plan = r.plan("auto", feats(needs=frozenset({"tools"})), caller)
    assert [d.id for d in plan.deployments] == ["mini#0"]
    assert ("big#0", "lacks capability: tools") in plan.dropped
    plan = r.plan("auto", feats(), caller)
    custom = r._custom["auto"]
    assert isinstance(custom, Reverse)
    route, candidates, features, seen_caller = custom.seen[-1]
    assert (route, features.input_tokens, seen_caller) == ("auto", 100, caller)
    core_order = [c.id for c in candidates]
    assert [d.id for d in plan.deployments] == [i for i in reversed(core_order) if i != "big#0"]
    assert ("big#0", "left out by the custom router") in plan.dropped
    first = candidates[0]
    assert {"in_flight", "error_rate", "circuit", "latency_s"} <= set(first.stats)
    assert first.expected_cost == r.expected_cost(first.id, features)
    assert plan.strategy == "custom"
    assert "strategy custom" in describe_plan(plan)


def test_a_router_that_chooses_nothing_or_fails() -> None:
    r = make(f"{__name__}:Reverse", "{drop: big#0}")
    custom = r._custom["auto"]
    assert isinstance(custom, Reverse)
    custom.drop = "mini#0"
    with pytest.raises(ProviderUnavailable, match="chose none of mini#0"):
        r.plan("auto", feats(needs=frozenset({"tools"})), Caller())
    failing = make(f"{__name__}:Reverse", "{fail: true}")
    plan = failing.plan("auto", feats(), Caller())
    # The core's balanced order stands in; the failure is logged, not raised.
    assert len(plan.deployments) == 3
    assert plan.strategy.startswith("custom (failed")


def test_entry_point_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_routers.py").write_text(
        textwrap.dedent(
            """
            class Cheapest:
                def order(self, route, candidates, features, caller):
                    return sorted(candidates, key=lambda c: c.expected_cost)
            """
        )
    )
    dist = tmp_path / "my_routers-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-routers\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hybridfast.routers]\ncheapest = my_routers:Cheapest\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = make("cheapest")
    assert [d.id for d in r.plan("auto", feats(), Caller()).deployments] == [
        "local#0",
        "mini#0",
        "big#0",
    ]
    with pytest.raises(ConfigError, match=r"routes\.auto\.router: no router 'nope'.*cheapest"):
        make("nope")


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ("no_such_module_xyz:Router", "ModuleNotFoundError"),
        (f"{__name__}:Missing", "AttributeError"),
        (f"{__name__}:NoOrder", "no `order` method"),
        (f"{__name__}:Reverse", "TypeError"),
    ],
)
def test_bad_custom_routers_are_config_errors(router: str, message: str) -> None:
    options = "{nope: 1}" if router.endswith(":Reverse") else "{}"
    with pytest.raises(ConfigError, match=message):
        make(router, options)


def test_the_example_router(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = parse_config((EXAMPLES / "custom-router.yaml").read_text(), env={}).config
    r = build_router(config, build_deployments(config))
    short = r.plan("auto", feats(input_tokens=100), Caller())
    assert short.deployments[0].id == "local#0"
    long = r.plan("auto", feats(input_tokens=5000), Caller())
    assert [d.id for d in long.deployments][:2] == ["big#0", "mini#0"]
    # A deployment failing a lot is left out while others are healthy.
    for ok in (False, True, False, True):
        r.started("big#0")
        r.finished("big#0", ok=ok, latency_s=0.1, ttft_s=None, output_tokens=0)
    long = r.plan("auto", feats(input_tokens=5000), Caller())
    assert long.deployments[0].id == "mini#0"
    sys.modules.pop("custom_router", None)
