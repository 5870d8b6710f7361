"""The native router and the plain-Python reference (benches/router_reference.py) decide
every request the same way: same order, same scores, same drops, same arm."""

from __future__ import annotations

import random

import pytest
from benches import router_reference as ref

from hybridfast._core import DeploymentSpec, Price, RouterCore, RouteSpec, request_hash

STRATEGIES = [
    "balanced",
    "cost",
    "latency",
    "quality",
    "local-first",
    "offline",
    "least-busy",
    "weighted",
]


def _random_case(
    rng: random.Random, strategy: str
) -> tuple[RouterCore, ref.RefRoute, list[ref.RefDeployment]]:
    n = rng.randint(1, 32)
    deps = [
        ref.RefDeployment(
            id=f"d{i}#0",
            name=f"d{i}",
            local=rng.random() < 0.3,
            quality=rng.choice([0.5, 0.6, 0.75, 0.9]),
            price_in=rng.choice([0, 150_000, 400_000, 2_000_000, 3_000_000]),
            price_out=rng.choice([0, 600_000, 1_600_000, 8_000_000, 15_000_000]),
            gpu_second=rng.choice([0, 0, 100_000_000]),
            context_window=rng.choice([None, 8_000, 128_000]),
            max_output_tokens=rng.choice([None, 4_096]),
            capabilities=rng.randrange(16),
            tags=rng.randrange(4),
            max_concurrency=rng.choice([None, 1, 2]),
            ttft_s=rng.choice([None, 0.2, 0.8]),
            tokens_per_s=rng.choice([None, 40.0, 120.0]),
        )
        for i in range(n)
    ]
    weights = [float(rng.randint(0, 5)) for _ in deps]
    weights[0] += 1.0
    route = ref.RefRoute(
        strategy=strategy,
        members=[(i, i) for i in range(n)],
        weights=weights,
        min_quality=rng.choice([None, 0.6]),
        max_cost=rng.choice([None, 5_000_000_000]),
        balance=(rng.choice([1.0, 2.0]), rng.choice([0.5, 1.0]), 1.0),
        downgrade_on_budget=rng.random() < 0.8,
    )
    specs = [
        DeploymentSpec(
            d.id,
            d.name,
            local=d.local,
            quality=d.quality,
            price=Price(d.price_in, d.price_out),
            gpu_second=d.gpu_second,
            context_window=d.context_window,
            max_output_tokens=d.max_output_tokens,
            capabilities=d.capabilities,
            tags=d.tags,
            max_concurrency=d.max_concurrency,
            ttft_s=d.ttft_s,
            tokens_per_s=d.tokens_per_s,
        )
        for d in deps
    ]
    route_spec = RouteSpec(
        "r",
        strategy,
        [d.name for d in deps],
        weights=route.weights,
        min_quality=route.min_quality,
        max_cost=route.max_cost,
        balance=route.balance,
        downgrade_on_budget=route.downgrade_on_budget,
    )
    core = RouterCore(specs, [route_spec], [d.id for d in deps], cooldown_s=3600.0)
    return core, route, deps


def _drive(core: RouterCore, deps: list[ref.RefDeployment], rng: random.Random) -> None:
    """Some live traffic: latencies, a few failures (some enough to open), calls in flight."""
    for d in deps:
        streamed = rng.random() < 0.5  # non-streamed answers report no first token
        for _ in range(rng.randint(0, 4)):
            core.started(d.id)
            ttft = rng.uniform(0.05, 1.5)
            core.finished(
                d.id,
                ok=rng.random() > 0.25,
                latency_s=ttft + rng.uniform(0.1, 5),
                ttft_s=ttft if streamed else None,
                output_tokens=rng.randint(0, 400),
            )
        for _ in range(rng.choice([0, 0, 1, 2])):
            core.started(d.id)
        if rng.random() < 0.1:
            for _ in range(5):
                core.finished(d.id, ok=False, latency_s=0.1)


def _live(core: RouterCore, deps: list[ref.RefDeployment]) -> list[ref.RefLive]:
    out = []
    for d in deps:
        s = core.stats(d.id)
        out.append(
            ref.RefLive(
                in_flight=s["in_flight"],
                latency_s=s["latency_s"],
                ttft_s=s["ttft_s"],
                tokens_per_s=s["tokens_per_s"],
                error_rate=s["error_rate"],
                circuit=s["circuit"],
            )
        )
    return out


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_native_and_reference_decide_alike(strategy: str) -> None:
    rng = random.Random(f"router-{strategy}")
    for case in range(60):
        core, route, deps = _random_case(rng, strategy)
        _drive(core, deps, rng)
        live = _live(core, deps)
        for _ in range(5):
            f = ref.RefFeatures(
                request_id=f"req-{case}-{rng.random()}",
                input_tokens=rng.choice([10, 1_000, 7_000, 50_000]),
                max_output_tokens=rng.choice([None, 100, 2_000, 8_000]),
                stream=rng.random() < 0.3,
                needs=rng.choice([0, 0, 1, 2, 3, 8]),
                tags=rng.choice([0, 0, 1, 2]),
                local_only=rng.random() < 0.1,
                budget_remaining=rng.choice([None, None, 0, 1_000_000_000, 10_000_000_000]),
            )
            out = core.plan(
                "r",
                f.request_id,
                f.input_tokens,
                f.max_output_tokens,
                f.stream,
                f.needs,
                f.tags,
                f.local_only,
                f.budget_remaining,
            )
            assert out is not None
            order_ids, dropped, got_strategy, arm, scores, refused, probe = out
            order, want_scores, want_dropped, want_arm = ref.plan(
                route, deps, live, f, ref.RefSettings()
            )
            context = f"case {case}: {f}"
            assert got_strategy == strategy
            assert probe is None, context
            assert order_ids == [deps[i].id for i in order], context
            assert [scores[deps[i].id] for i in order] == want_scores, context
            assert sorted(d for d, _ in dropped) == sorted(deps[i].id for i, _ in want_dropped)
            assert refused == (not order and any(k == "budget" for _, k in want_dropped))
            if strategy == "weighted" and order:
                assert arm == deps[want_arm].name, context


def test_request_hash_is_the_same_in_both() -> None:
    for rid in ["", "a", "req-1", "ünïcödé", "x" * 200]:
        assert request_hash(rid) == ref.request_hash(rid)


def test_reference_state_update_matches_native() -> None:
    """`finished` in the reference keeps the same EWMAs and error rate as the core."""
    specs = [DeploymentSpec("a#0", "a")]
    core = RouterCore(specs, [], ["a#0"], failures_to_open=100, min_requests=1000)
    st = ref.RefLive()
    s = ref.RefSettings(failures_to_open=100, min_requests=1000)
    rng = random.Random(7)
    for _ in range(50):
        ok = rng.random() > 0.3
        ttft = rng.uniform(0.01, 1)
        latency = ttft + rng.uniform(0, 3)
        tokens = rng.randint(0, 500)
        core.started("a#0")
        st.in_flight += 1
        core.finished("a#0", ok=ok, latency_s=latency, ttft_s=ttft, output_tokens=tokens)
        ref.finished(st, 0.0, ok, latency, ttft, tokens, s)
    got = core.stats("a#0")
    assert got["latency_s"] == pytest.approx(st.latency_s, rel=1e-12)
    assert got["ttft_s"] == pytest.approx(st.ttft_s, rel=1e-12)
    assert got["tokens_per_s"] == pytest.approx(st.tokens_per_s, rel=1e-12)
    assert got["error_rate"] == pytest.approx(st.error_rate)
    assert got["in_flight"] == st.in_flight == 0
