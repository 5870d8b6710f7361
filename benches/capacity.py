"""What one request costs the shared stores, and what one instance serves: the inputs of the
capacity arithmetic in docs/deployment.md.

    python benches/capacity.py [--seconds 8] [--concurrency 16] [--json out.json]

Runs a zero-latency fake upstream and one `serve` on PostgreSQL (ledger) + Redis (budget
counter and cache), with a global budget so every request goes through the shared counter,
drives it with the benchmark's keep-alive client, and reads the stores' own counters before and
after: Redis `INFO commandstats` (commands per request) and PostgreSQL `pg_stat_database`
(transactions and inserted rows per request, i.e. the ledger's group commit; read 11 s after
the load, since PostgreSQL publishes an idle backend's statistics within 10 s). Nothing here is a
test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benches.gateway_load import run_phase
from tests.fakes.server import start_fake, start_server

DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_counters(r: Any) -> tuple[int, int, int]:
    """(commands, script calls, script microseconds). Commands run inside a Lua script count
    among the commands too; a script's time includes theirs, and Redis runs one at a time, so
    script microseconds per request bound what one Redis core serves."""
    stats = r.info("commandstats")
    commands = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))
    scripts = [v for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")]
    return (
        commands,
        sum(int(v["calls"]) for v in scripts),
        sum(int(v["usec"]) for v in scripts),
    )


def pg_counters(conn: Any) -> tuple[int, int]:
    row = conn.execute(
        "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = 'test'"
    ).fetchone()
    return int(row[0]), int(row[1])


def config(upstream: str, schema: str, prefix: str) -> str:
    return f"""
providers:
  - {{name: up, kind: openai, base_url: {upstream}, api_key: bench-key, max_retries: 0}}
models:
  - {{name: chat, provider: up, model: m, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
ledger:
  backend: postgres
  dsn: {DSN}
  schema: {schema}
  counter: redis
  redis_url: {REDIS_URL}
  redis_prefix: '{prefix}:budget'
budgets:
  - {{scope: global, window: month, limit_usd: 1000000}}
cache:
  backend: redis
  redis_url: {REDIS_URL}
  redis_prefix: '{prefix}:cache'
"""


async def measure(seconds: float, concurrency: int, stream: bool) -> dict[str, Any]:
    import psycopg
    import redis

    schema = f"hf_capacity_{uuid.uuid4().hex[:8]}"
    prefix = f"hf-capacity:{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(REDIS_URL)
    try:
        with (
            start_fake("openai") as fake,
            start_server(config(fake.url, schema, prefix)) as server,
            psycopg.connect(DSN, autocommit=True) as pg,
        ):
            await run_phase(
                "warm-up", server.url + "/v1", concurrency=4, stream=stream, seconds=1.0
            )
            await asyncio.sleep(0.5)  # let the warm-up's ledger batch land
            redis0, (commits0, rows0) = redis_counters(r), pg_counters(pg)
            phase = await run_phase(
                "load",
                server.url + "/v1",
                concurrency=concurrency,
                stream=stream,
                seconds=seconds,
                server_pids=(server.process.pid,),
            )
            # PostgreSQL publishes an idle backend's statistics within 10 s.
            await asyncio.sleep(11.0)
            redis1, (commits1, rows1) = redis_counters(r), pg_counters(pg)
            pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()
    n = phase.requests
    return {
        "stream": stream,
        "concurrency": concurrency,
        **phase.summary(),
        "requests": n,
        # Each figure is per answered request; the probes above add a few calls of their own.
        "redis_commands_per_request": round((redis1[0] - redis0[0]) / n, 2),
        "redis_scripts_per_request": round((redis1[1] - redis0[1]) / n, 2),
        "redis_script_us_per_request": round((redis1[2] - redis0[2]) / n, 1),
        "pg_commits_per_request": round((commits1 - commits0) / n, 3),
        "pg_rows_per_request": round((rows1 - rows0) / n, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    import uvloop

    uvloop.install()
    results = [
        asyncio.run(measure(args.seconds, args.concurrency, stream)) for stream in (False, True)
    ]
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
