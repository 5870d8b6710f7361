"""The pipeline's own CPU per whole answer, without HTTP, sockets or disk: `Gateway.complete`
at the default config with the features `serve` installs (hooks, cache, router), a memory
ledger and a provider that answers at once in-process. What is left is the pipeline's steps
(admit, cache decision, route, attempt, fallback loop, books, hooks), the part of a request's
CPU that the gateway's Python owns beside aiohttp's server and the upstream client.

Reported for reading (`extra_info`), not gated: it is an absolute time.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import uvloop

from hybridfast.config import parse_config
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.server.features import INSTALLERS
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, Usage

CONFIG = """
providers:
  - {name: up, kind: openai, base_url: "http://127.0.0.1:9", api_key: bench, max_retries: 0}
models:
  - {name: chat, provider: up, model: gpt-4.1-mini,
     price: {input_per_mtok: 0.4, output_per_mtok: 1.6}}
ledger:
  backend: memory
"""
N = 3000  # requests per block
BLOCKS = 5


async def _measure() -> list[float]:
    gateway = Gateway(parse_config(CONFIG).config)
    for install in INSTALLERS:
        install(gateway)
    await gateway.open()
    answer = ChatAnswer(
        content="Hello there.",
        model="gpt-4.1-mini",
        usage=Usage(input_tokens=12, output_tokens=5),
    )

    async def chat(dep: Deployment, request: ChatRequest, retries: int = 0) -> ChatAnswer:
        return answer

    for provider in gateway.providers.values():
        provider.chat = chat  # type: ignore[method-assign]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Say something short."}]
    try:
        for _ in range(500):  # warm
            await gateway.complete(ChatRequest(model="chat", messages=messages))
        gc.collect()
        blocks = []
        for _ in range(BLOCKS):
            started = time.thread_time()
            for _ in range(N):
                request = ChatRequest(model="chat", messages=messages)
                await gateway.complete(request, RequestContext("chat"))
            blocks.append((time.thread_time() - started) / N)
        return blocks
    finally:
        await gateway.close()


def test_pipeline_cpu_per_whole_answer(benchmark: Any) -> None:
    result: dict[str, list[float]] = {}

    def measure() -> None:
        result["blocks"] = uvloop.run(_measure())

    benchmark.pedantic(measure, rounds=1, iterations=1)
    blocks = result["blocks"]
    benchmark.extra_info["cpu_us_per_request_min"] = round(min(blocks) * 1e6, 1)
    benchmark.extra_info["cpu_us_per_request_median"] = round(statistics.median(blocks) * 1e6, 1)
