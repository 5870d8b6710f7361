"""Gateway overhead and throughput, against the upstream called directly and against a bare
aiohttp pass-through proxy (bytes forwarded, nothing parsed), all measured in the same run.

Four processes serve: the fake OpenAI upstream (`python -m tests.fakes`, uvloop, zero
latency, 20-chunk streams), the bare proxy (`benches/gateway_load.py proxy`), the floor
server (`benches/gateway_load.py floor`: aiohttp's server and the gateway's own upstream
client with nothing between them; measured one request at a time) and a real
`python -m hybridfast serve` at its default config (SQLite ledger at `synchronous: normal`
in a temporary directory, request log, metrics, caches on: the requests carry no
temperature, so, as for a user's sampled requests, the cache lets them through to the
upstream; the `_sync_full` rows run a second gateway with `synchronous: full`). With
HYBRIDFAST_BENCH_LITELLM naming a `litellm` command, LiteLLM's proxy is measured beside them
(`benches/litellm_proxy.py`). The load comes from this process over raw keep-alive
HTTP/1.1. Everything shares the same cores, so only ratios within the run are gated
(`benches/floors/gateway.toml`); absolute figures are in `extra_info` for reading.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benches.gateway_load import Phase, run_phase
from benches.litellm_proxy import executable as litellm_command
from benches.litellm_proxy import start_litellm
from tests.fakes.server import free_port, start_fake, start_server

PHASE_S = 1.0  # seconds per measured phase
CHUNKS = 20  # content pieces per streamed answer


class Stack:
    def __init__(self, urls: dict[str, str], pids: dict[str, int]) -> None:
        self.urls = urls
        self.pids = pids

    @property
    def litellm(self) -> bool:
        return "litellm" in self.urls

    def run(self, target: str, concurrency: int, stream: bool, seconds: float = PHASE_S) -> Phase:
        import uvloop

        loop = uvloop.new_event_loop()
        try:
            pids = (self.pids[target],)
            return loop.run_until_complete(
                run_phase(
                    target,
                    self.urls[target],
                    concurrency=concurrency,
                    stream=stream,
                    seconds=seconds,
                    server_pids=pids,
                )
            )
        finally:
            loop.close()

    def compare(self, concurrency: int, stream: bool, runs: int = 2) -> tuple[Phase, Phase]:
        """The best of a few interleaved phases of the bare proxy and the gateway: other
        work on a shared machine only ever slows a phase down, and interleaving spreads
        it over both."""
        bare: list[Phase] = []
        gateway: list[Phase] = []
        for _ in range(runs):
            bare.append(self.run("bare", concurrency, stream))
            gateway.append(self.run("gateway", concurrency, stream))
        return max(bare, key=lambda p: p.rps), max(gateway, key=lambda p: p.rps)


def _ledger_sync() -> str:
    """The ledger's `synchronous` line: none, so the bench measures the default a user gets
    (`normal`), unless HYBRIDFAST_BENCH_SYNC names one."""
    sync = os.environ.get("HYBRIDFAST_BENCH_SYNC")
    return f"  synchronous: {sync}\n" if sync else ""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from _stack(_ledger_sync(), litellm=litellm_command())


@pytest.fixture(scope="module")
def stack_sync_full() -> Iterator[Stack]:
    """The same stack with `ledger.synchronous: full`: an fsync per group commit."""
    yield from _stack("  synchronous: full\n")


def _serve(kind: str, upstream: str, port: int) -> subprocess.Popen[str]:
    """`benches/gateway_load.py proxy|floor` on `port`, once it is ready."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "gateway_load.py"),
            kind,
            "--upstream",
            upstream,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _stack(ledger_sync: str, litellm: str | None = None) -> Iterator[Stack]:
    with start_fake("openai", chunks=CHUNKS) as fake:
        port, floor_port = free_port(), free_port()
        proxy = _serve("proxy", fake.url, port)
        floor = _serve("floor", fake.url, floor_port)
        try:
            config = f"""
providers:
  - {{name: up, kind: openai, base_url: "{fake.url}", api_key: bench, max_retries: 0}}
models:
  - {{name: chat, provider: up, model: gpt-4.1-mini,
      price: {{input_per_mtok: 0.4, output_per_mtok: 1.6}}}}
server:
  log_level: warning
ledger:
  backend: {os.environ.get("HYBRIDFAST_BENCH_LEDGER", "sqlite")}
{ledger_sync}"""
            with start_server(config) as gateway, contextlib.ExitStack() as extra:
                stack = Stack(
                    {
                        "direct": fake.url,
                        "bare": f"http://127.0.0.1:{port}/v1",
                        "floor": f"http://127.0.0.1:{floor_port}/v1",
                        "gateway": gateway.url + "/v1",
                    },
                    {
                        "direct": fake.process.pid,
                        "bare": proxy.pid,
                        "floor": floor.pid,
                        "gateway": gateway.process.pid,
                    },
                )
                if litellm:
                    litellm_port = free_port()
                    process = extra.enter_context(start_litellm(litellm, fake.url, litellm_port))
                    stack.urls["litellm"] = f"http://127.0.0.1:{litellm_port}/v1"
                    stack.pids["litellm"] = process.pid
                yield stack
        finally:
            for process in (proxy, floor):
                process.terminate()
                process.wait(5)


def record(benchmark: Any, **phases: Phase) -> None:
    for name, phase in phases.items():
        assert phase.errors == 0, f"{name}: {phase.errors} failed requests"
        for key, value in phase.summary().items():
            benchmark.extra_info[f"{name}_{key}"] = value


def overhead(benchmark: Any, stack: Stack, stream: bool) -> None:
    result: dict[str, Phase] = {}

    def measure() -> None:
        result["direct"] = stack.run("direct", 1, stream)
        result["bare"], result["gateway"] = stack.compare(1, stream)
        if not stream:
            # What aiohttp's server and the upstream client cost with nothing between them.
            result["floor"] = max(
                (stack.run("floor", 1, stream) for _ in range(2)), key=lambda p: p.rps
            )
        if stack.litellm:
            result["litellm"] = stack.run("litellm", 1, stream)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    direct, gateway, bare = result["direct"], result["gateway"], result["bare"]
    record(benchmark, **result)
    info = benchmark.extra_info
    if "litellm" in result:
        info["litellm_added_p50_ms"] = round((result["litellm"].p50 - direct.p50) * 1000, 3)
    info["added_p50_ms"] = round((gateway.p50 - direct.p50) * 1000, 3)
    info["added_p99_ms"] = round((gateway.p99 - direct.p99) * 1000, 3)
    info["added_ttfb_p50_ms"] = round((gateway.ttfb50 - direct.ttfb50) * 1000, 3)
    info["bare_added_p50_ms"] = round((bare.p50 - direct.p50) * 1000, 3)
    if "floor" in result:
        info["floor_added_p50_ms"] = round((result["floor"].p50 - direct.p50) * 1000, 3)
    if stream:
        # After the first byte: the rest of the stream's time, per chunk, over direct.
        tail = (gateway.p50 - gateway.ttfb50) - (direct.p50 - direct.ttfb50)
        info["added_per_chunk_us"] = round(tail / CHUNKS * 1e6, 1)
    # Gated: how much of the bare proxy's own added latency the gateway adds on top, as a
    # share (1.0 = no more than the bare proxy).
    info["latency_share_vs_bare"] = round(bare.p50 / gateway.p50, 3)
    # One request at a time, requests/s is the inverse of the round trip; CPU per request
    # there includes the event loop's wake-ups, which concurrency shares out.
    info["ratio_vs_bare"] = round(gateway.rps / bare.rps, 3)
    info["cpu_share_vs_bare"] = round(
        bare.cpu_per_request_ms / max(gateway.cpu_per_request_ms, 1e-9), 3
    )


def throughput(benchmark: Any, stack: Stack, concurrency: int, stream: bool) -> None:
    result: dict[str, Phase] = {}

    def measure() -> None:
        result["bare"], result["gateway"] = stack.compare(concurrency, stream)
        if stack.litellm:
            # One phase is enough: it is tens of times slower than either, not a ratio near 1.
            result["litellm"] = stack.run("litellm", concurrency, stream)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    bare, gateway = result["bare"], result["gateway"]
    record(benchmark, **result)
    benchmark.extra_info["ratio_vs_bare"] = round(gateway.rps / bare.rps, 3)
    if "litellm" in result:
        benchmark.extra_info["ratio_vs_litellm"] = round(gateway.rps / result["litellm"].rps, 1)
    # The server's CPU per request is steadier than requests/s on a busy machine; when a
    # server is CPU-bound its throughput is the inverse of it, so this share estimates
    # `ratio_vs_bare` without the noise.
    benchmark.extra_info["cpu_share_vs_bare"] = round(
        bare.cpu_per_request_ms / max(gateway.cpu_per_request_ms, 1e-9), 3
    )


def test_gateway_overhead_1(benchmark: Any, stack: Stack) -> None:
    overhead(benchmark, stack, stream=False)


def test_gateway_stream_overhead_1(benchmark: Any, stack: Stack) -> None:
    overhead(benchmark, stack, stream=True)


def test_gateway_throughput_16(benchmark: Any, stack: Stack) -> None:
    throughput(benchmark, stack, 16, stream=False)


def test_gateway_stream_throughput_16(benchmark: Any, stack: Stack) -> None:
    throughput(benchmark, stack, 16, stream=True)


def test_gateway_overhead_1_sync_full(benchmark: Any, stack_sync_full: Stack) -> None:
    overhead(benchmark, stack_sync_full, stream=False)


def test_gateway_throughput_16_sync_full(benchmark: Any, stack_sync_full: Stack) -> None:
    throughput(benchmark, stack_sync_full, 16, stream=False)


def test_gateway_throughput_64(benchmark: Any, stack: Stack) -> None:
    throughput(benchmark, stack, 64, stream=False)


def test_gateway_stream_throughput_64(benchmark: Any, stack: Stack) -> None:
    throughput(benchmark, stack, 64, stream=True)
