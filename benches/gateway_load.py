"""Load generation for the gateway benchmarks: a bare aiohttp pass-through proxy (the floor
any Python gateway pays), a minimal keep-alive HTTP/1.1 client (lighter than any client
library, so the client's own CPU distorts the comparison as little as possible), and
phase runners that report requests/s, latency percentiles, time to first byte and server
CPU per request.

`python benches/gateway_load.py proxy --upstream URL --port N` runs the bare proxy;
`... floor ...` the floor server: aiohttp's server and the gateway's own upstream client
(`FastClient`), the request and the answer parsed and re-encoded as JSON, and nothing else
(no pipeline, ledger, cache or observability): what any gateway on these parts pays.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


# --- the bare proxy ------------------------------------------------------------------------


async def run_proxy(upstream: str, host: str, port: int) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(
            upstream + request.path_qs.removeprefix("/v1"),
            data=body,
            headers={"Content-Type": "application/json"},
        ) as up:
            if up.content_type == "text/event-stream":
                resp = web.StreamResponse(status=up.status)
                resp.content_type = up.content_type
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            return web.Response(
                status=up.status, body=await up.read(), content_type=up.content_type
            )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def run_floor(upstream: str, host: str, port: int) -> None:
    import orjson
    from aiohttp import web

    from hybridfast.providers.http import FastClient

    client = FastClient(
        upstream, {"Content-Type": "application/json"}, limit=256, connect_s=5, read_s=60
    )
    url = upstream + "/chat/completions"

    async def forward(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        up = await client.post(url, orjson.dumps(body))
        answer = orjson.loads(await up.read())
        up.release()
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- a minimal HTTP/1.1 client ---------------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, path: bytes, host: bytes, body: bytes) -> tuple[int, float, int]:
        """Sends one request; returns (status, seconds to the first body byte, body bytes)."""
        start = time.perf_counter()
        self.writer.write(
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: "
            + host
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        first: float | None = None
        size = 0
        if b"transfer-encoding: chunked" in lower:
            while True:
                line = await reader.readuntil(b"\r\n")
                n = int(line.split(b";", 1)[0], 16)
                if n == 0:
                    await reader.readuntil(b"\r\n")
                    break
                await reader.readexactly(n + 2)
                if first is None:
                    first = time.perf_counter() - start
                size += n
        else:
            at = lower.index(b"content-length:") + 15
            n = int(lower[at : lower.index(b"\r\n", at)])
            await reader.readexactly(n)
            first = time.perf_counter() - start
            size = n
        return status, first, size

    def close(self) -> None:
        self.writer.close()


@dataclass
class Phase:
    name: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    @property
    def p99(self) -> float:
        return self.pct(self.latencies, 0.99)

    @property
    def ttfb50(self) -> float:
        return statistics.median(self.first_bytes) if self.first_bytes else 0.0

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_s / self.requests * 1000 if self.requests else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50 * 1000, 3),
            "p99_ms": round(self.p99 * 1000, 3),
            "ttfb_p50_ms": round(self.ttfb50 * 1000, 3),
            "cpu_ms_per_request": round(self.cpu_per_request_ms, 3),
            "errors": self.errors,
        }


def request_body(i: int, stream: bool) -> bytes:
    # A different prompt per request, so no cache can answer it.
    s = b"true" if stream else b"false"
    return (
        b'{"model":"chat","stream":' + s + b',"max_tokens":64,"messages":[{"role":"user",'
        b'"content":"Write one short sentence about the number ' + str(i).encode() + b'."}]}'
    )


async def run_phase(
    name: str,
    url: str,
    *,
    concurrency: int,
    stream: bool,
    seconds: float,
    warmup: int = 20,
    server_pids: tuple[int, ...] = (),
) -> Phase:
    """Keeps `concurrency` requests in flight against `url` for `seconds`."""
    rest = url.removeprefix("http://")
    hostport, _, base = rest.partition("/")
    host, port = hostport.split(":")
    path = ("/" + base + "/chat/completions").replace("//", "/").encode()
    conns = [await Connection.open(host, int(port)) for _ in range(concurrency)]
    counter = iter(range(10**9))
    for c in conns[: min(len(conns), warmup)]:
        await c.post(path, hostport.encode(), request_body(next(counter), stream))
    phase = Phase(name, concurrency)
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, first, _ = await conn.post(
                path, hostport.encode(), request_body(next(counter), stream)
            )
            phase.latencies.append(time.perf_counter() - t0)
            phase.first_bytes.append(first)
            phase.requests += 1
            if status != 200:
                phase.errors += 1

    cpu0 = sum(cpu_seconds(p) for p in server_pids)
    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    phase.seconds = time.perf_counter() - started
    phase.cpu_s = sum(cpu_seconds(p) for p in server_pids) - cpu0
    for c in conns:
        c.close()
    return phase


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("proxy", "floor"):
        server = sub.add_parser(name)
        server.add_argument("--upstream", required=True)
        server.add_argument("--host", default="127.0.0.1")
        server.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    import uvloop

    uvloop.install()
    run = run_proxy if args.cmd == "proxy" else run_floor
    asyncio.run(run(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
