"""`serve --workers 2` against one worker, in one run: requests/s and latency at 16 concurrent,
non-streaming, against a zero-latency fake upstream in its own process.

    python benches/workers.py [--seconds 8] [--json out.json]

On a 2-core machine the load generator, the fake upstream and the workers share the cores, so
the ratio understates what a second worker buys on a machine with cores to spare: read it as a
floor, not as the scaling of a bigger machine. Not part of the gate (a wall-clock ratio between
process layouts is too noisy on a shared 2-core box).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.gateway_load import run_phase
from tests.fakes.server import start_fake, start_server


def config(upstream: str, ledger: Path) -> str:
    return f"""
providers:
  - {{name: up, kind: openai, base_url: {upstream}, api_key: bench-key, max_retries: 0}}
models:
  - {{name: chat, provider: up, model: m, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
ledger: {{backend: sqlite, path: {ledger}}}
"""


async def measure(workers: int, seconds: float, upstream: str) -> dict[str, Any]:
    ledger = Path(tempfile.mkdtemp()) / "ledger.db"
    with start_server(config(upstream, ledger), args=["--workers", str(workers)]) as server:
        await run_phase("warm-up", server.url + "/v1", concurrency=4, stream=False, seconds=1.0)
        phase = await run_phase(
            f"{workers} workers", server.url + "/v1", concurrency=16, stream=False, seconds=seconds
        )
    summary = phase.summary()
    summary.pop("cpu_ms_per_request")  # not measured here: the workers are several processes
    return {"workers": workers, **summary, "requests": phase.requests}


async def main_async(seconds: float) -> list[dict[str, Any]]:
    with start_fake("openai") as fake:
        one = await measure(1, seconds, fake.url)
        two = await measure(2, seconds, fake.url)
    two["ratio_to_one_worker"] = round(two["rps"] / one["rps"], 2) if one["rps"] else None
    return [one, two]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    results = asyncio.run(main_async(args.seconds))
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
