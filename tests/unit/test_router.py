"""The router as the pipeline uses it: built from a config, planned from RequestFeatures."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from hybridfast.config import parse_config
from hybridfast.deployments import build_deployments
from hybridfast.errors import (
    BudgetExceeded,
    ConfigError,
    ModelNotFound,
    ProviderUnavailable,
    QueueFull,
    Unsupported,
)
from hybridfast.routing import NativeRouter, build_router, describe_plan
from hybridfast.types import Caller, RequestFeatures

BASE = """
providers:
  - {name: oa, kind: openai, api_key: test}
  - {name: ol, kind: ollama, base_url: "http://127.0.0.1:1"}
models:
  - {name: smart, provider: oa, model: gpt-4.1, quality: 0.9, capabilities: [tools, vision],
     price: {input_per_mtok: 2, output_per_mtok: 8}, context_window: 100000}
  - {name: fast, provider: oa, model: gpt-4.1-mini, quality: 0.75, capabilities: [tools, audio],
     price: {input_per_mtok: 0.4, output_per_mtok: 1.6}, tags: [eu]}
  - {name: local, provider: ol, model: llama3, quality: 0.6, context_window: 8192,
     price: {per_gpu_second: 0.001}, ttft_ms: 50, tokens_per_s: 100, max_concurrency: 2}
routes:
  auto: {strategy: balanced, candidates: [smart, fast, local]}
  cheap: {strategy: cost, candidates: [smart, fast, local], min_quality: 0.7}
  best: {strategy: quality, candidates: [smart, fast, local]}
  ab: {strategy: weighted, candidates: [smart, fast], weights: [3, 1]}
  nested: {strategy: latency, candidates: [cheap, local]}
  offline: {strategy: offline, candidates: [auto]}
  strict: {strategy: quality, candidates: [smart, fast], downgrade_on_budget: false}
"""
CALLER = Caller(key_name="k")


def make(extra: str = "") -> NativeRouter:
    config = parse_config(BASE + extra).config
    return build_router(config, build_deployments(config))


def feats(**kw: object) -> RequestFeatures:
    kw.setdefault("request_id", "r-1")
    kw.setdefault("input_tokens", 1000)
    return RequestFeatures(**kw)  # type: ignore[arg-type]


def ids(router: NativeRouter, name: str, **kw: object) -> list[str]:
    return [d.id for d in router.plan(name, feats(**kw), CALLER).deployments]


def test_strategies_order_as_configured() -> None:
    r = make()
    assert ids(r, "cheap") == ["fast#0", "smart#0"]
    assert ids(r, "best") == ["smart#0", "fast#0", "local#0"]
    # latency: local answers in 50 ms + 256/100 s, the cloud ones at the 500 ms prior + 256/50.
    assert ids(r, "nested") == ["local#0", "fast#0", "smart#0"]
    assert ids(r, "offline") == ["local#0"]
    plan = r.plan("cheap", feats(), CALLER)
    assert plan.strategy == "cost"
    assert plan.dropped == [("local#0", "quality 0.6 below the route's min_quality 0.7")]
    # Expected cost in dollars: 1000 × $0.4/M + 256 × $1.6/M.
    assert plan.scores["fast#0"] == pytest.approx(0.0004 + 0.0004096)


def test_gpu_seconds_price_local_time() -> None:
    r = make()
    # local: (0.05 + 256 / 100) s × $0.001 = $0.00261; fast: $0.0008096.
    assert r.expected_cost("local#0", feats()) == 2_610_000_000
    assert ids(r, "auto", needs=frozenset()) == ids(r, "auto")


def test_unknown_name_and_empty_plans_raise_the_right_errors() -> None:
    r = make()
    with pytest.raises(ModelNotFound, match="'nope'"):
        r.plan("nope", feats(), CALLER)
    # A model listed without `capabilities:` may have any: the upstream decides.
    assert ids(r, "offline", needs=frozenset({"vision"})) == ["local#0"]
    # One declared without it is a client error naming the models that may have it, not a
    # 5xx that SDKs retry.
    with pytest.raises(Unsupported) as info:
        r.plan("fast", feats(needs=frozenset({"vision"})), CALLER)
    assert info.value.status == 400
    assert info.value.code == "ERR_UNSUPPORTED"
    assert "vision" in str(info.value)
    assert "models that have it: local, smart" in str(info.value)
    with pytest.raises(BudgetExceeded) as budget:
        r.plan("auto", feats(budget_remaining=10), CALLER)
    assert "over budget" in str(budget.value)
    assert budget.value.code == "ERR_BUDGET_EXCEEDED"


def test_budget_downgrades_then_refuses() -> None:
    r = make()
    # Budgets beyond what an i64 of picodollars holds ($9.2M) count as plenty.
    assert ids(r, "best", budget_remaining=10**30) == ids(r, "best")
    with pytest.raises(BudgetExceeded):
        r.plan("best", feats(budget_remaining=-(10**30)), CALLER)
    # smart costs ~$0.004 for this request, fast ~$0.0008, local ~$0.0026.
    plan = r.plan("best", feats(budget_remaining=3_000_000_000), CALLER)
    assert [d.id for d in plan.deployments] == ["fast#0", "local#0"]
    assert plan.dropped[0][0] == "smart#0"
    assert plan.dropped[0][1].startswith("over budget")
    with pytest.raises(BudgetExceeded):
        r.plan("strict", feats(budget_remaining=3_000_000_000), CALLER)


def test_capabilities_tags_and_locality() -> None:
    r = make()
    # fast declares its list without vision; local declares none (unknown: it may).
    assert sorted(ids(r, "auto", needs=frozenset({"vision"}))) == ["local#0", "smart#0"]
    # A capability only the config names (audio) works like the built-in ones.
    assert sorted(ids(r, "auto", needs=frozenset({"audio"}))) == ["fast#0", "local#0"]
    with pytest.raises(Unsupported):
        r.plan("auto", feats(needs=frozenset({"telepathy"})), CALLER)
    assert ids(r, "auto", tags=("eu",)) == ["fast#0"]
    assert ids(r, "auto", tags=("local-only",)) == ["local#0"]
    # A tag no deployment carries (a key's label, say) does not restrict routing.
    assert ids(r, "auto", tags=("team-blue",)) == ids(r, "auto")
    with pytest.raises(ProviderUnavailable, match="smart#0: lacks a tag the request asks for"):
        r.plan("auto", feats(tags=("eu",), needs=frozenset({"vision"})), CALLER)
    local_key = Caller(key_name="k", tags=("local-only",))
    assert [d.id for d in r.plan("auto", feats(), local_key).deployments] == ["local#0"]
    # 8192-token window: a long prompt goes elsewhere.
    plan = r.plan("auto", feats(input_tokens=9000), CALLER)
    assert "local#0" not in [d.id for d in plan.deployments]
    assert ("local#0", "context window too small: needs 9000 tokens, has 8192") in plan.dropped


def test_max_concurrency_and_least_busy() -> None:
    # Without the admission queue, a deployment at max_concurrency is left out at once.
    r = make("router: {group_strategy: least-busy}\nqueue: {enabled: false}\n")
    r.started("local#0")
    r.started("local#0")
    with pytest.raises(QueueFull, match="saturated: 2 of 2"):
        r.plan("local", feats(), CALLER)
    r.finished("local#0", ok=True, latency_s=1.0, ttft_s=0.1, output_tokens=20)
    assert ids(r, "local") == ["local#0"]
    assert r.stats("local#0")["in_flight"] == 1


def test_the_admission_queue_extends_saturation_by_max_queue() -> None:
    # With the queue (the default), a full deployment still takes `max_queue` waiters.
    r = make("queue: {max_queue: 1}\n")
    r.started("local#0")
    r.started("local#0")
    assert ids(r, "local") == ["local#0"]  # one waiter fits
    r.started("local#0")
    with pytest.raises(QueueFull, match="saturated: 3 of 2"):
        r.plan("local", feats(), CALLER)


def test_weighted_split_is_deterministic_and_records_the_arm() -> None:
    r = make()
    arms: Counter[str | None] = Counter()
    for i in range(4000):
        plan = r.plan("ab", feats(request_id=f"req-{i}"), CALLER)
        arms[plan.arm] += 1
        assert plan.deployments[0].name == plan.arm
        assert r.plan("ab", feats(request_id=f"req-{i}"), CALLER).arm == plan.arm
    assert arms["smart"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_breaker_trips_moves_traffic_then_probes_and_closes() -> None:
    r = make(
        "router: {circuit: {failures_to_open: 2, cooldown_s: 0.05, jitter: 0,"
        " successes_to_close: 1}}\n"
    )
    assert ids(r, "best")[0] == "smart#0"
    for _ in range(2):
        r.started("smart#0")
        r.finished("smart#0", ok=False, latency_s=0.01, ttft_s=None, output_tokens=0)
    assert r.stats("smart#0")["circuit"] == "open"
    plan = r.plan("best", feats(), CALLER)
    assert [d.id for d in plan.deployments] == ["fast#0", "local#0"]
    assert plan.dropped[0][0] == "smart#0"
    assert "circuit open" in plan.dropped[0][1]
    time.sleep(0.06)
    probe = r.plan("best", feats(), CALLER)
    assert probe.probe == "smart#0"
    assert probe.deployments[0].id == "smart#0"
    assert "[probe: circuit half-open]" in describe_plan(probe)
    # While the probe is out, nobody else is sent there.
    assert "smart#0" not in ids(r, "best")
    r.started("smart#0")
    r.finished("smart#0", ok=True, latency_s=0.5, ttft_s=0.1, output_tokens=30)
    assert r.stats("smart#0")["circuit"] == "closed"
    assert ids(r, "best")[0] == "smart#0"


def test_describe_plan_tells_the_whole_story() -> None:
    r = make()
    text = describe_plan(r.explain("cheap", feats(), CALLER))
    assert "route 'cheap': strategy cost" in text
    assert "scores: expected cost in USD (lower first)" in text
    assert "1.  fast#0" in text
    assert "oa/gpt-4.1-mini" in text
    assert "$0.4/$1.6 per Mtok" in text
    assert "score 0.0008096" in text
    assert "dropped:\n  - local#0: quality 0.6 below the route's min_quality 0.7" in text
    ab = describe_plan(r.explain("ab", feats(request_id="x"), CALLER))
    assert "strategy weighted, arm '" in ab
    # An empty plan is explained, not raised.
    empty = r.explain("offline", feats(needs=frozenset({"telepathy"})), CALLER)
    assert empty.deployments == []
    assert "nothing can serve this request" in describe_plan(empty)
    with pytest.raises(ModelNotFound):
        r.explain("nope", feats(), CALLER)


def test_live_latency_moves_latency_routes() -> None:
    r = make()
    assert ids(r, "nested")[0] == "local#0"
    for _ in range(20):
        r.started("local#0")
        r.finished("local#0", ok=True, latency_s=30.0, ttft_s=5.0, output_tokens=100)
    stats = r.stats("local#0")
    assert stats["ttft_s"] == pytest.approx(5.0)
    assert stats["tokens_per_s"] == pytest.approx(4.0)
    assert ids(r, "nested")[0] == "fast#0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  loop1: {candidates: [loop2]}\n  loop2: {candidates: [loop1]}\n", "cycle"),
        ("router: {group_strategy: weighted}\n", "group_strategy"),
        ("  w: {strategy: weighted, candidates: [smart, fast], weights: [0, 0]}\n", "weights"),
    ],
)
def test_bad_routing_config_is_a_config_error(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(extra)


def test_concurrent_plans_and_updates_keep_counts_exact() -> None:
    r = make()

    def worker() -> None:
        for i in range(2000):
            plan = r.plan("auto", feats(request_id=str(i)), CALLER)
            dep = plan.deployments[0].id
            r.started(dep)
            r.finished(dep, ok=True, latency_s=0.2, ttft_s=0.05, output_tokens=10)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = r.all_stats()
    assert all(s["in_flight"] == 0 for s in stats.values())
    assert sum(s["successes"] for s in stats.values()) == 8000


def test_unknown_deployment_ids_are_errors() -> None:
    from hybridfast._core import NotFoundError

    r = make()
    with pytest.raises(NotFoundError):
        r.started("nope#0")


async def test_metrics_are_read_from_live_state_at_scrape_time() -> None:
    from prometheus_client import generate_latest

    from hybridfast.metrics import REGISTRY

    # Deployments of their own, so routers other tests left behind cannot answer for them.
    models = "".join(f"  - {{name: metered{i}, provider: oa, model: m}}\n" for i in range(3))
    text = BASE.replace("routes:\n", models + "routes:\n", 1)
    config = parse_config(text + "router: {circuit: {failures_to_open: 1, cooldown_s: 60}}\n")
    r = build_router(config.config, build_deployments(config.config))
    r.started("metered0#0")
    r.finished("metered0#0", ok=False, latency_s=0.1, ttft_s=None, output_tokens=0)
    r.started("metered1#0")
    r.started("metered2#0")
    r.finished("metered2#0", ok=True, latency_s=2.0, ttft_s=0.5, output_tokens=150)
    scraped = generate_latest(REGISTRY).decode()
    assert 'hybridfast_router_circuit_state{deployment="metered0#0"} 2.0' in scraped
    assert 'hybridfast_router_circuit_state{deployment="metered1#0"} 0.0' in scraped
    assert 'hybridfast_router_circuit_opened_total{deployment="metered0#0"} 1.0' in scraped
    assert 'hybridfast_router_in_flight{deployment="metered1#0"} 1.0' in scraped
    assert 'hybridfast_router_error_rate{deployment="metered0#0"} 1.0' in scraped
    assert 'hybridfast_router_latency_ewma_seconds{deployment="metered2#0"} 2.0' in scraped
    assert 'hybridfast_router_tokens_per_second_ewma{deployment="metered2#0"} 100.0' in scraped
    await r.close()
    assert "metered0#0" not in generate_latest(REGISTRY).decode()
