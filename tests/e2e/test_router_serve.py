"""Routing in a real `python -m hybridfast serve` process, seen through the official OpenAI
SDK: the deployment header follows the breaker, and `/metrics` shows the breaker's state."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import openai
import pytest

from tests.fakes import FakeUpstream
from tests.fakes.server import RunningServer

pytestmark = pytest.mark.slow


def deployment_of(client: openai.OpenAI) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    raw.parse()
    return raw.headers["x-hybridfast-deployment"]


def metrics(server: RunningServer) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_breaker_through_serve_and_the_sdk(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
) -> None:
    config = f"""
providers:
  - {{name: a, kind: openai, base_url: "{fake_openai.url}", api_key: k, max_retries: 0}}
  - {{name: b, kind: anthropic, base_url: "{fake_anthropic.url}", api_key: k, max_retries: 0}}
models:
  - {{name: cheap, provider: a, model: m-a, price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
  - {{name: dear, provider: b, model: m-b, price: {{input_per_mtok: 3, output_per_mtok: 15}}}}
routes:
  auto: {{strategy: cost, candidates: [cheap, dear]}}
router:
  circuit: {{failures_to_open: 2, cooldown_s: 0.5, jitter: 0, successes_to_close: 1}}
ledger: {{backend: memory}}
"""
    server = serve_gateway(config)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert deployment_of(client) == "cheap#0"
    assert 'hybridfast_router_circuit_state{deployment="cheap#0"} 0.0' in metrics(server)
    fake_openai.fail(500)
    assert [deployment_of(client) for _ in range(4)] == ["dear#0"] * 4
    assert fake_openai.calls == 3  # two failures opened the circuit; then it was skipped
    scraped = metrics(server)
    assert 'hybridfast_router_circuit_state{deployment="cheap#0"} 2.0' in scraped
    assert 'hybridfast_router_circuit_opened_total{deployment="cheap#0"} 1.0' in scraped
    fake_openai.set(fail_status=None, fail_times=0)
    time.sleep(0.6)
    assert deployment_of(client) == "cheap#0"  # the probe, and it closes the circuit
    assert 'hybridfast_router_circuit_state{deployment="cheap#0"} 0.0' in metrics(server)
    client.close()
