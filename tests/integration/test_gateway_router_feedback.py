"""What the pipeline tells the router and the ledger about requests that are not the
deployment's fault: malformed requests and impatient clients never open a healthy circuit,
the A/B arm is reported, and a router's budget refusal is on the books."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import hybridfast
from hybridfast.config import parse_config
from hybridfast.errors import BudgetExceeded, InvalidRequest
from tests.fakes import FakeUpstream
from tests.fakes.parts import RecordingLedger


def config_text(a: FakeUpstream, b: FakeUpstream) -> str:
    return f"""
providers:
  - {{name: a, kind: {a.kind}, base_url: "{a.url}", api_key: k, max_retries: 0}}
  - {{name: b, kind: {b.kind}, base_url: "{b.url}", api_key: k, max_retries: 0}}
models:
  - {{name: cheap, provider: a, model: m-a, quality: 0.8,
     price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
  - {{name: dear, provider: b, model: m-b, quality: 0.8,
     price: {{input_per_mtok: 3, output_per_mtok: 15}}}}
routes:
  auto: {{strategy: cost, candidates: [cheap, dear]}}
  ab: {{strategy: weighted, candidates: [cheap, dear], weights: [0.5, 0.5]}}
router:
  circuit: {{failures_to_open: 2, cooldown_s: 30, jitter: 0}}
ledger: {{backend: memory}}
"""


@pytest.mark.parametrize("stream", [False, True])
async def test_requests_the_upstream_refuses_as_malformed_never_open_its_circuit(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream, stream: bool
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        fake_openai.fail(400)

        async def ask() -> object:
            if stream:
                return await gw.stream("hi", model="auto").text()
            return await gw.chat("hi", model="auto")

        for _ in range(4):
            with pytest.raises(InvalidRequest):
                await ask()
        stats = gw.router.stats("cheap#0")  # type: ignore[attr-defined]
        assert stats["circuit"] == "closed"
        assert stats["failures"] == 0
        assert stats["in_flight"] == 0
        # A real outage still opens it (the same counts, now of upstream faults).
        fake_openai.fail(500)
        for _ in range(2):
            assert (await gw.chat("hi", model="auto")).deployment == "dear#0"
        assert gw.router.stats("cheap#0")["circuit"] == "open"  # type: ignore[attr-defined]


async def test_a_cancelled_call_leaves_no_mark_on_the_deployment(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    fake_openai.latency(first_byte_s=5.0)
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        for _ in range(3):
            task = asyncio.ensure_future(gw.chat("hi", model="auto"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        stats = gw.router.stats("cheap#0")  # type: ignore[attr-defined]
        assert (stats["in_flight"], stats["failures"], stats["circuit"]) == (0, 0, "closed")
        assert stats["latency_s"] is None  # no truncated sample taught it a false latency


async def test_the_ab_arm_is_reported(fake_openai: FakeUpstream, fake_ollama: FakeUpstream) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    async with hybridfast.Gateway(config, ledger=RecordingLedger()) as gw:
        arms = set()
        for _ in range(20):
            result = await gw.chat("hi", model="ab")
            arm = result.info.headers()["x-hybridfast-arm"]
            assert result.info.meta()["arm"] == arm
            assert arm == result.deployment.split("#")[0]
            arms.add(arm)
        assert arms == {"cheap", "dear"}
        plain = await gw.chat("hi", model="auto")
        assert "x-hybridfast-arm" not in plain.info.headers()


async def test_a_budget_refusal_by_the_router_is_on_the_books(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(config_text(fake_openai, fake_ollama)).config
    ledger = RecordingLedger(limit=1)  # one picodollar: nothing is affordable
    async with hybridfast.Gateway(config, ledger=ledger) as gw:
        with pytest.raises(BudgetExceeded):
            await gw.chat("hi", model="auto")
    assert fake_openai.calls == fake_ollama.calls == 0
    [record] = ledger.records
    assert (record.status, record.cost, record.route) == (429, 0, "auto")


def test_a_litellm_price_file_prices_the_deployments(
    tmp_path: Path, fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(
        '{"m-unpriced": {"input_cost_per_token": 0.000002, '
        '"output_cost_per_token": 0.00001, "litellm_provider": "openai"}}'
    )
    text = config_text(fake_openai, fake_ollama).replace(
        "ledger: {backend: memory}", f"ledger: {{backend: memory, prices_file: '{prices}'}}"
    )
    text = text.replace("routes:", "  - {name: listed, provider: a, model: m-unpriced}\nroutes:")
    gw = hybridfast.Gateway(parse_config(text).config)
    [listed] = [d for d in gw.deployments if d.name == "listed"]
    assert (listed.price.input, listed.price.output) == (2_000_000, 10_000_000)


async def test_cache_headers_say_bypass_for_sampled_requests_and_carry_the_similarity(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    text = config_text(fake_openai, fake_ollama).replace(
        "ledger: {backend: memory}",
        "ledger: {backend: memory}\ncache: {semantic: {enabled: true, embedder: hashing, "
        "threshold: 0.5, guards: []}}",
    )
    async with hybridfast.Gateway(parse_config(text).config, ledger=RecordingLedger()) as gw:
        sampled = await gw.chat("hi", model="cheap", temperature=0.7)
        assert sampled.info.headers()["x-hybridfast-cache"] == "bypass"
        first = await gw.chat("how do I sort a list in python", model="cheap", temperature=0)
        assert first.info.headers()["x-hybridfast-cache"] == "miss"
        assert "x-hybridfast-cache-similarity" not in first.info.headers()
        near = await gw.chat("how do I sort a python list", model="cheap", temperature=0)
        headers = near.info.headers()
        assert headers["x-hybridfast-cache"] == "semantic-hit"
        similarity = float(headers["x-hybridfast-cache-similarity"])
        assert 0.5 <= similarity < 1.0
        assert near.info.meta()["similarity"] == round(similarity, 4)
