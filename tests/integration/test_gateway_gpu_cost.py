"""Local GPUs priced per GPU-second: the answer costs the exact price times the measured
upstream time, streamed or not, and the budget hold covers a slow worst case."""

from __future__ import annotations

from decimal import Decimal

import pytest

import hybridfast
from hybridfast._core import PICODOLLARS_PER_USD
from hybridfast.config import parse_config
from tests.fakes import FakeUpstream
from tests.fakes.parts import RecordingLedger

PER_SECOND = Decimal("0.0008")  # dollars per GPU-second


@pytest.mark.parametrize("stream", [False, True])
async def test_gpu_time_is_charged(fake_ollama: FakeUpstream, stream: bool) -> None:
    text = f"""
providers: [{{name: gpu0, kind: ollama, base_url: "{fake_ollama.url}"}}]
models:
  - {{name: llama, provider: gpu0, model: llama3, price: {{per_gpu_second: {PER_SECOND}}}}}
ledger: {{backend: memory}}
"""
    fake_ollama.latency(first_byte_s=0.2)
    ledger = RecordingLedger()
    async with hybridfast.Gateway(parse_config(text).config, ledger=ledger) as gw:
        [dep] = gw.deployments
        assert dep.gpu_second == 800_000_000  # picodollars per second, parsed exactly
        if stream:
            handle = gw.stream("hi", model="llama", max_tokens=100)
            await handle.text()
            info = handle.info
        else:
            info = (await gw.chat("hi", model="llama", max_tokens=100)).info
    [record] = ledger.records
    assert record.cost == info.cost
    # At least the 0.2 s the upstream waited, and not absurdly more on a busy machine.
    assert int(PER_SECOND * PICODOLLARS_PER_USD * Decimal("0.2")) <= info.cost
    assert info.cost <= int(PER_SECOND * PICODOLLARS_PER_USD * 30)
    # The hold assumed 100 tokens at 10 tokens/s: 10 GPU-seconds.
    [(_, _, _, held)] = ledger.reserved
    assert held == int(PER_SECOND * PICODOLLARS_PER_USD * 10)
