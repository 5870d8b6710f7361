"""One routing decision over 32 candidates, and one state update, called from Python: the
native router against the plain-Python reference of the same scoring (router_reference.py),
measured in the same run. The p50/p99 of single decisions go into extra_info."""

from __future__ import annotations

import time
from typing import Any

import router_reference as ref
from hybridfast.config import Config, ModelConfig, PriceConfig, RouteConfig
from hybridfast.deployments import build_deployments
from hybridfast.routing import NativeRouter, build_router
from hybridfast.types import Caller, RequestFeatures

N = 32
CALLER = Caller(key_name="bench")
FEATURES = RequestFeatures(
    request_id="bench-1", input_tokens=1200, max_output_tokens=400, needs=frozenset({"tools"})
)


def _model(i: int) -> ModelConfig:
    return ModelConfig(
        name=f"m{i}",
        provider="local" if i % 4 == 0 else "cloud",
        model=f"model-{i}",
        quality=0.5 + (i % 9) / 20,
        price=PriceConfig(
            input_per_mtok=round(0.1 * (i + 1), 6), output_per_mtok=round(0.4 * (i + 1), 6)
        ),
        context_window=128_000 if i % 5 else 4_000,
        capabilities=["tools", "json"] if i % 3 else ["json"],
        ttft_ms=100.0 + 10 * i,
        tokens_per_s=40.0 + i,
    )


def _router() -> NativeRouter:
    from hybridfast.config import ProviderConfig

    config = Config(
        providers=[ProviderConfig(name="cloud", kind="openai", api_key="x")],
        models=[_model(i) for i in range(N)],
        routes={"auto": RouteConfig(candidates=[f"m{i}" for i in range(N)])},
    )
    router = build_router(config, build_deployments(config))
    for i, d in enumerate(router.deployments):  # some live traffic on every deployment
        for j in range(3):
            router.started(d.id)
            router.finished(
                d.id, ok=(i + j) % 7 != 0, latency_s=1.0 + i / 10, ttft_s=0.2, output_tokens=50
            )
    return router


def _reference(
    router: NativeRouter,
) -> tuple[ref.RefRoute, list[ref.RefDeployment], list[ref.RefLive]]:
    caps = {"tools": 1, "vision": 2, "json": 4, "embeddings": 8}
    deps = [
        ref.RefDeployment(
            id=d.id,
            name=d.name,
            local=d.local,
            quality=d.quality,
            price_in=d.price.input,
            price_out=d.price.output,
            context_window=d.context_window,
            capabilities=sum(caps[c] for c in d.capabilities),
            ttft_s=None if d.ttft_ms is None else d.ttft_ms / 1000,
            tokens_per_s=d.tokens_per_s,
        )
        for d in router.deployments
    ]
    live = []
    for d in router.deployments:
        s = router.stats(d.id)
        live.append(
            ref.RefLive(
                in_flight=s["in_flight"],
                latency_s=s["latency_s"],
                ttft_s=s["ttft_s"],
                tokens_per_s=s["tokens_per_s"],
                error_rate=s["error_rate"],
                circuit=s["circuit"],
            )
        )
    route = ref.RefRoute("balanced", [(i, i) for i in range(N)], [1.0] * N)
    return route, deps, live


REF_FEATURES = ref.RefFeatures(
    request_id="bench-1", input_tokens=1200, max_output_tokens=400, needs=1
)


def _percentiles(fn: Any, n: int = 20_000) -> dict[str, float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    return {
        "p50_us": samples[n // 2] / 1000,
        "p99_us": samples[n * 99 // 100] / 1000,
        "decisions_per_s": round(1e9 / (sum(samples) / n)),
    }


def test_router_plan_native(benchmark: Any) -> None:
    router = _router()
    plan = router.plan("auto", FEATURES, CALLER)
    route, deps, live = _reference(router)
    order, _, _, _ = ref.plan(route, deps, live, REF_FEATURES, ref.RefSettings())
    assert [d.id for d in plan.deployments] == [deps[i].id for i in order]
    assert len(plan.deployments) + len(plan.dropped) == N
    benchmark.extra_info.update(_percentiles(lambda: router.plan("auto", FEATURES, CALLER)))
    benchmark(router.plan, "auto", FEATURES, CALLER)


def test_router_plan_core(benchmark: Any) -> None:
    """The native call alone, without the Python wrapper that builds the RoutePlan."""
    core = _router()._core
    args = ("auto", "bench-1", 1200, 400, False, 1, 0, False, None)
    benchmark.extra_info.update(_percentiles(lambda: core.plan(*args)))
    benchmark(core.plan, *args)


def test_router_plan_python(benchmark: Any) -> None:
    route, deps, live = _reference(_router())
    settings = ref.RefSettings()
    benchmark.extra_info.update(
        _percentiles(lambda: ref.plan(route, deps, live, REF_FEATURES, settings), n=5_000)
    )
    order, _, _, _ = benchmark(ref.plan, route, deps, live, REF_FEATURES, settings)
    assert order


def test_router_update_native(benchmark: Any) -> None:
    router = _router()

    def update() -> None:
        router.started("m3#0")
        router.finished("m3#0", ok=True, latency_s=1.2, ttft_s=0.2, output_tokens=80)

    benchmark(update)
    assert router.stats("m3#0")["in_flight"] == 0


def test_router_update_python(benchmark: Any) -> None:
    st = ref.RefLive()
    settings = ref.RefSettings()
    now = time.monotonic

    def update() -> None:
        st.in_flight += 1
        ref.finished(st, now(), True, 1.2, 0.2, 80, settings)

    benchmark(update)
    assert st.in_flight == 0
