"""Observability costs, measured in one run.

1. The request log's admin query at 10 million rows against the same query at 10 thousand
   (keyset pages must not slow down with the table), and a deep page by keyset cursor
   against the same page by OFFSET. The big table is built with one bulk INSERT ... SELECT
   and kept between runs (`HYBRIDFAST_BENCH_REQUEST_LOG_ROWS` rows, default 10 000 000, in
   the temp dir; ~2.6 GB, ~2 minutes to build on a 2-core machine).
2. CPU per request in the `serve` process with each sink on and off: the request log, JSON
   request lines, OpenTelemetry tracing (exporting to a local OTLP endpoint). Every variant
   runs as its own `serve` against the same zero-latency fake upstream; phases interleave
   and the best of a few is kept, so noise from the shared machine hits every variant.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web
from benches.gateway_load import Phase, run_phase
from tests.fakes.background import BackgroundLoop
from tests.fakes.server import free_port, start_fake, start_server

from hybridfast import _core
from hybridfast.observability.request_log import (
    TABLE,
    Query,
    SqliteBackend,
    schema_statements,
)

ROWS = int(os.environ.get("HYBRIDFAST_BENCH_REQUEST_LOG_ROWS", "10000000"))
SMALL_ROWS = 10_000
ROUNDS = int(os.environ.get("HYBRIDFAST_BENCH_OBSERVABILITY_ROUNDS", "4"))  # CPU phases each
BASE_TS = 1_700_000_000_000
STEP_MS = 3


def build_table(path: Path, rows: int) -> None:
    """`rows` requests with one INSERT ... SELECT (indexes built after, as a restore
    would), spread over keys, teams, models and statuses."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    statements = schema_statements("id INTEGER PRIMARY KEY")
    conn.execute(statements[0])
    conn.execute(
        f"""INSERT INTO {TABLE} (ts_ms, request_id, trace_id, endpoint, route, deployment,
        provider, model, key_name, team, user_name, status, code, stream, cache,
        input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, cost_picos,
        latency_ms, ttft_ms, overhead_ms, fallbacks, recovered)
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ? - 1)
        SELECT ? + i * ?, printf('%016x', i), NULL, 'chat', 'chat', 'chat#' || (i % 4),
            'p' || (i % 4), 'model-' || (i % 8), 'key' || (i % 1000), 'team' || (i % 50),
            NULL, CASE WHEN i % 97 = 0 THEN 429 WHEN i % 101 = 0 THEN 502 ELSE 200 END,
            NULL, i % 2, CASE WHEN i % 5 = 0 THEN 'hit' ELSE 'miss' END, 100 + i % 50,
            200 + i % 70, 0, 0, 1000000 * (i % 13), 12.5, NULL, 0.3, 0, 0
        FROM seq""",
        (rows, BASE_TS, STEP_MS),
    )
    conn.commit()
    for statement in statements[1:]:
        conn.execute(statement)
    conn.commit()
    conn.close()


def table_at(rows: int, directory: Path) -> Path:
    path = directory / f"hybridfast-bench-request-log-{rows}.db"
    if path.exists():
        with contextlib.closing(sqlite3.connect(path)) as conn, contextlib.suppress(sqlite3.Error):
            if conn.execute(f"SELECT max(id) FROM {TABLE}").fetchone()[0] == rows:
                return path
        path.unlink()
    build_table(path, rows)
    return path


@pytest.fixture(scope="module")
def big_path() -> Path:
    return table_at(ROWS, Path(tempfile.gettempdir()))


@pytest.fixture(scope="module")
def big(big_path: Path) -> SqliteBackend:
    return SqliteBackend(str(big_path))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SqliteBackend:
    return SqliteBackend(str(table_at(SMALL_ROWS, tmp_path_factory.mktemp("small"))))


def _middle(rows: int) -> tuple[int, int]:
    """The cursor half way down a table of `rows` (newest first)."""
    row_id = rows // 2
    return BASE_TS + (row_id - 1) * STEP_MS, row_id


def _page(backend: SqliteBackend, query: Query) -> int:
    page = backend.page(query)
    assert len(page.rows) == query.limit
    return len(page.rows)


def test_request_log_first_page_10k(benchmark: Any, small: SqliteBackend) -> None:
    benchmark(_page, small, Query(limit=100))


def test_request_log_first_page_big(benchmark: Any, big: SqliteBackend) -> None:
    benchmark.extra_info["rows"] = ROWS
    benchmark(_page, big, Query(limit=100))


def test_request_log_filtered_deep_page_big(benchmark: Any, big: SqliteBackend) -> None:
    query = Query(filters=(("key_name", "key7"),), cursor=_middle(ROWS), limit=100)
    benchmark.extra_info["rows"] = ROWS
    benchmark(_page, big, query)


def test_request_log_deep_page_keyset_big(benchmark: Any, big: SqliteBackend) -> None:
    benchmark.extra_info["rows"] = ROWS
    benchmark(_page, big, Query(cursor=_middle(ROWS), limit=100))


def test_request_log_deep_page_offset_big(benchmark: Any, big_path: Path) -> None:
    """The same page as the keyset one, the way an OFFSET-paginated UI asks for it."""
    # The backend's own SQLite library, as the keyset pages use (one library per file).
    conn = _core.SqliteRows(f"file:{big_path}?mode=ro", uri=True)

    def offset_page() -> int:
        rows = conn.query(
            f"SELECT * FROM {TABLE} ORDER BY ts_ms DESC, id DESC LIMIT 100 OFFSET ?",
            (ROWS - ROWS // 2 + 1,),
        )
        assert len(rows) == 100
        return len(rows)

    benchmark.extra_info["rows"] = ROWS
    benchmark.pedantic(offset_page, rounds=3, iterations=1)
    conn.close()


# --- CPU per request with each sink on and off -----------------------------------------

VARIANTS = {
    # Metrics and the live feed only: the floor every variant is compared with.
    "baseline": "observability: {request_log: {enabled: false}, request_lines: 'off'}\n",
    "request_log": "observability: {request_lines: 'off'}\n",
    "json_lines": "observability: {request_log: {enabled: false}, request_lines: 'on', "
    "log_format: json}\n",
    "tracing": "observability: {request_log: {enabled: false}, request_lines: 'off', "
    "tracing: {enabled: true, endpoint: '{otlp}'}}\n",
    "tracing_json": "observability: {request_log: {enabled: false}, request_lines: 'off', "
    "tracing: {enabled: true, endpoint: '{otlp}', protocol: http/json}}\n",
    # One trace in twenty, the way a busy service samples.
    "tracing_sampled": "observability: {request_log: {enabled: false}, request_lines: 'off', "
    "tracing: {enabled: true, endpoint: '{otlp}', sample_ratio: 0.05}}\n",
}


async def _accept_traces(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(content_type="application/x-protobuf")


@contextlib.contextmanager
def otlp_sink() -> Iterator[str]:
    loop = BackgroundLoop()
    app = web.Application()
    app.router.add_post("/v1/traces", _accept_traces)
    runner = web.AppRunner(app)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop.run(start())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.run(runner.cleanup())
        loop.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, int]]]:
    with (
        start_fake("openai", chunks=20) as fake,
        otlp_sink() as otlp,
        contextlib.ExitStack() as stack,
    ):
        out = {}
        for name, extra in VARIANTS.items():
            workdir = tmp_path_factory.mktemp(name)
            config = f"""
providers:
  - {{name: up, kind: openai, base_url: "{fake.url}", api_key: bench, max_retries: 0}}
models:
  - {{name: chat, provider: up, model: gpt-4.1-mini,
      price: {{input_per_mtok: 0.4, output_per_mtok: 1.6}}}}
cache: {{exact: {{enabled: false}}, semantic: {{enabled: false}}}}
server: {{log_level: info}}
ledger: {{backend: sqlite, path: {workdir}/ledger.db, synchronous: normal}}
""" + extra.replace("{otlp}", otlp)
            server = stack.enter_context(start_server(config, workdir=workdir))
            out[name] = (server.url + "/v1", server.process.pid)
        yield out


def _cpu_per_request(servers: dict[str, tuple[str, int]], stream: bool) -> dict[str, Phase]:
    loop = uvloop.new_event_loop()
    best: dict[str, Phase] = {}
    try:
        for _ in range(ROUNDS):
            for name, (url, pid) in servers.items():
                phase = loop.run_until_complete(
                    run_phase(
                        name, url, concurrency=4, stream=stream, seconds=1.0, server_pids=(pid,)
                    )
                )
                assert phase.errors == 0
                if name not in best or phase.cpu_per_request_ms < best[name].cpu_per_request_ms:
                    best[name] = phase
    finally:
        loop.close()
    return best


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_observability_cpu_per_request(
    benchmark: Any, servers: dict[str, tuple[str, int]], stream: bool
) -> None:
    result: dict[str, dict[str, Phase]] = {}
    benchmark.pedantic(
        lambda: result.setdefault("phases", _cpu_per_request(servers, stream)),
        rounds=1,
        iterations=1,
    )
    phases = result["phases"]
    base = phases["baseline"].cpu_per_request_ms
    info = benchmark.extra_info
    for name, phase in phases.items():
        info[f"{name}_cpu_ms_per_request"] = round(phase.cpu_per_request_ms, 4)
        # baseline CPU / variant CPU: 1.0 costs nothing, 0.95 costs 5 % more per request.
        info[f"{name}_cpu_ratio"] = round(base / phase.cpu_per_request_ms, 4)
