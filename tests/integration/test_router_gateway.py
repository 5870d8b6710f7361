"""The router inside the real pipeline, against fake upstreams: a failing upstream trips its
breaker and traffic moves; once it recovers it is probed and comes back; a weighted route
splits traffic by its weights; `route --dry-run` explains the decision."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import hybridfast
from hybridfast.config import parse_config
from hybridfast.routing import NativeRouter
from tests.fakes import FakeUpstream
from tests.fakes.parts import RecordingLedger


def config_text(cheap: FakeUpstream, dear: FakeUpstream, extra: str = "") -> str:
    return f"""
providers:
  - {{name: a, kind: {cheap.kind}, base_url: "{cheap.url}", api_key: k, max_retries: 0}}
  - {{name: b, kind: {dear.kind}, base_url: "{dear.url}", api_key: k, max_retries: 0}}
models:
  - {{name: cheap, provider: a, model: m-a, quality: 0.8,
     price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
  - {{name: dear, provider: b, model: m-b, quality: 0.8,
     price: {{input_per_mtok: 3, output_per_mtok: 15}}}}
routes:
  auto: {{strategy: cost, candidates: [cheap, dear]}}
  ab: {{strategy: weighted, candidates: [cheap, dear], weights: [0.7, 0.3]}}
router:
  circuit: {{failures_to_open: 3, cooldown_s: 0.3, jitter: 0, successes_to_close: 2}}
ledger: {{backend: memory}}
{extra}"""


async def test_breaker_moves_traffic_and_a_recovered_upstream_comes_back(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        router = gw.router
        assert isinstance(router, NativeRouter)
        assert (await gw.chat("hi", model="auto")).deployment == "cheap#0"
        fake_openai.fail(500)
        # Each failure falls back to the dear one; the third opens the cheap one's circuit.
        for _ in range(3):
            assert (await gw.chat("hi", model="auto")).deployment == "dear#0"
        assert fake_openai.calls == 4
        assert router.stats("cheap#0")["circuit"] == "open"
        # Open: the cheap upstream is not even tried any more.
        for _ in range(5):
            assert (await gw.chat("hi", model="auto")).deployment == "dear#0"
        assert fake_openai.calls == 4
        # It recovers; after the cooldown one probe goes to it, and two good answers close it.
        fake_openai.set(fail_status=None, fail_times=0)
        await asyncio.sleep(0.35)
        assert router.stats("cheap#0")["circuit"] == "half-open"
        assert (await gw.chat("hi", model="auto")).deployment == "cheap#0"
        assert router.stats("cheap#0")["circuit"] == "half-open"
        assert (await gw.chat("hi", model="auto")).deployment == "cheap#0"
        assert router.stats("cheap#0")["circuit"] == "closed"
        served = Counter([(await gw.chat("hi", model="auto")).deployment for _ in range(5)])
        assert served == {"cheap#0": 5}


async def test_a_probe_that_fails_reopens_the_circuit(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        fake_openai.fail(503)
        for _ in range(3):
            await gw.chat("hi", model="auto")
        await asyncio.sleep(0.35)
        calls = fake_openai.calls
        # The probe fails, the answer still comes (from the fallback), the circuit reopens.
        assert (await gw.chat("hi", model="auto")).deployment == "dear#0"
        assert fake_openai.calls == calls + 1
        assert gw.router.stats("cheap#0")["circuit"] == "open"  # type: ignore[attr-defined]


async def test_streams_feed_first_token_latency(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    extra = "  quick: {strategy: latency, candidates: [cheap, dear]}\n"
    config = parse_config(
        config_text(fake_openai, fake_ollama).replace("router:", extra + "router:", 1)
    ).config
    fake_openai.latency(first_byte_s=0.15)
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        for model in ("cheap", "dear"):
            await gw.stream("hi", model=model).text()
        stats = gw.router.stats("cheap#0")  # type: ignore[attr-defined]
        assert stats["ttft_s"] >= 0.15
        assert gw.router.stats("dear#0")["ttft_s"] < 0.15  # type: ignore[attr-defined]
        stream = gw.stream("hi", model="quick")
        await stream.text()
        assert stream.info.deployment_id == "dear#0"


async def test_weighted_split_matches_its_weights(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    n = 300
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        served = Counter([(await gw.chat("hi", model="ab")).deployment for _ in range(n)])
    assert served["cheap#0"] + served["dear#0"] == n
    # 0.7 of 300: a binomial standard deviation is ~8, so ±30 is beyond 3.5σ.
    assert abs(served["cheap#0"] - 0.7 * n) <= 30, served
    assert fake_openai.calls == served["cheap#0"]


def test_route_dry_run_explains_the_decision(
    tmp_path: Path, fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(config_text(fake_openai, fake_ollama))
    out = subprocess.run(
        [sys.executable, "-m", "hybridfast", "route", "hello", "--model", "auto", "--dry-run",
         "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "route 'auto': strategy cost" in out.stdout
    assert "scores: expected cost in USD (lower first)" in out.stdout
    lines = out.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "cheap#0" in line)
    second = next(i for i, line in enumerate(lines) if "dear#0" in line)
    assert first < second
    assert "a/m-a" in lines[first]
    assert "$0.1/$0.2 per Mtok" in lines[first]
    assert fake_openai.calls == fake_ollama.calls == 0


@pytest.mark.parametrize("strategy", ["offline", "local-first"])
async def test_locality_strategies_through_the_gateway(
    strategy: str, fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    # fake_ollama is `b` (an ollama provider: local by default), fake_openai is `a` (cloud).
    extra = f"  here: {{strategy: {strategy}, candidates: [cheap, dear]}}\n"
    text = config_text(fake_openai, fake_ollama).replace("router:", extra + "router:", 1)
    config = parse_config(text).config
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        assert (await gw.chat("hi", model="here")).deployment == "dear#0"
        fake_ollama.fail(500)
        if strategy == "offline":
            with pytest.raises(hybridfast.errors.ProviderUnavailable):
                await gw.chat("hi", model="here")
            assert fake_openai.calls == 0
        else:
            assert (await gw.chat("hi", model="here")).deployment == "cheap#0"


async def test_budget_downgrades_to_an_affordable_deployment_then_refuses(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    text = config_text(fake_openai, fake_ollama).replace(
        "name: dear, provider: b, model: m-b, quality: 0.8",
        "name: dear, provider: b, model: m-b, quality: 0.9",
    )
    text = text.replace(
        "router:", "  best: {strategy: quality, candidates: [cheap, dear]}\nrouter:", 1
    )
    config = parse_config(text).config
    # 100 output tokens: dear ≈ $0.0015, cheap ≈ $0.00002; the caller has $0.0005 left.
    ledger = RecordingLedger(limit=500_000_000)
    async with hybridfast.Gateway(config, ledger=ledger) as gw:
        request = gw.request("hi", model="best", max_tokens=100)
        plan = gw.plan(request)
        assert [d.id for d in plan.deployments] == ["cheap#0"]
        assert plan.dropped[0][0] == "dear#0"
        assert plan.dropped[0][1].startswith("over budget: expected cost $0.0015")
        assert (await gw.chat("hi", model="best", max_tokens=100)).deployment == "cheap#0"
        assert fake_ollama.calls == 0
        ledger.limit = ledger.spent + 1_000_000  # $0.000001 left: nobody is affordable
        with pytest.raises(hybridfast.errors.BudgetExceeded) as refused:
            await gw.chat("hi", model="best", max_tokens=100)
        assert refused.value.code == "ERR_BUDGET_EXCEEDED"
        assert "cheap#0: over budget" in str(refused.value)
    assert fake_openai.calls == 1
