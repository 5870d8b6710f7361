"""The fast HTTP/1.1 client against hand-written servers: body framings, keep-alive reuse,
a stale idle connection, the connection limit, broken bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast.providers.http import FastClient, _Connection, _FastResponse

Handler = Callable[[bytes], list[bytes]]


async def serve(
    answer: Handler, *, close_after: bool = False
) -> tuple[asyncio.Server, dict[str, Any]]:
    """A server that reads one request at a time and writes `answer(request)`'s pieces."""
    stats: dict[str, Any] = {"connections": 0, "requests": 0, "in_flight": 0, "max_in_flight": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                stats["requests"] += 1
                stats["in_flight"] += 1
                stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
                for piece in answer(head + body):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.001)
                stats["in_flight"] -= 1
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, stats


def url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def client(server: asyncio.Server, limit: int = 8) -> FastClient:
    return FastClient(url(server), {"X-Key": "k"}, limit=limit, connect_s=1, read_s=2)


async def collect(pieces: AsyncIterator[bytes]) -> bytes:
    return b"".join([p async for p in pieces])


def length_body(request: bytes) -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"he", b"llo"]


async def test_content_length_and_keep_alive() -> None:
    server, stats = await serve(length_body)
    c = client(server)
    try:
        for _ in range(3):
            resp = await c.post(url(server) + "/v1/x", b"{}")
            assert resp.status == 200
            assert await resp.read() == b"hello"
            resp.release()
    finally:
        await c.close()
        server.close()
    assert stats["requests"] == 3
    assert stats["connections"] == 1  # kept alive


async def test_chunked_stream_arrives_in_pieces() -> None:
    def chunked(request: bytes) -> list[bytes]:
        assert b"X-Key: k" in request
        assert request.startswith(b"POST /v1/chat HTTP/1.1\r\n")
        return [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"6;ext=1\r\n world\r\n",
            b"0\r\n\r\n",
        ]

    server, stats = await serve(chunked)
    c = client(server)
    try:
        resp = await c.post(url(server) + "/v1/chat", b"{}")
        assert await collect(resp.iter_any()) == b"hello world"
        resp.release()
        resp = await c.post(url(server) + "/v1/chat", b"{}")
        assert await resp.read() == b"hello world"
        resp.release()
    finally:
        await c.close()
        server.close()
    assert stats["connections"] == 1


async def test_body_to_end_of_connection_is_not_reused() -> None:
    def until_close(request: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"all of it"]

    server, stats = await serve(until_close, close_after=True)
    c = client(server)
    try:
        for _ in range(2):
            resp = await c.post(url(server) + "/", b"{}")
            assert resp.header("connection") == "close"
            assert await resp.read() == b"all of it"
            resp.release()
    finally:
        await c.close()
        server.close()
    assert stats["connections"] == 2


async def test_stale_idle_connection_is_retried_once() -> None:
    # Keep-alive framing, but the server closes after each answer: the next request on
    # the pooled connection fails before any byte and is sent again on a fresh one.
    server, stats = await serve(length_body, close_after=True)
    c = client(server)
    try:
        for _ in range(3):
            resp = await c.post(url(server) + "/", b"{}")
            assert await resp.read() == b"hello"
            resp.release()
            await asyncio.sleep(0.01)
    finally:
        await c.close()
        server.close()
    assert stats["requests"] == 3


async def test_connection_limit() -> None:
    server, stats = await serve(length_body)
    c = client(server, limit=2)

    async def one() -> bytes:
        resp = await c.post(url(server) + "/", b"{}")
        data = await resp.read()
        resp.release()
        return data

    try:
        assert await asyncio.gather(*(one() for _ in range(10))) == [b"hello"] * 10
    finally:
        await c.close()
        server.close()
    assert stats["max_in_flight"] <= 2
    assert stats["connections"] <= 2


async def test_broken_bodies_raise_client_errors() -> None:
    def short(request: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", b"only this"]

    server, _ = await serve(short, close_after=True)
    c = client(server)
    try:
        resp = await c.post(url(server) + "/", b"{}")
        with pytest.raises(aiohttp.ClientError):
            await resp.read()
        resp.close()
    finally:
        await c.close()
        server.close()


async def test_unreachable_upstream() -> None:
    c = FastClient("http://127.0.0.1:9", {}, limit=1, connect_s=1, read_s=1)
    with pytest.raises(OSError):
        await c.post("http://127.0.0.1:9/", b"{}")
    # The failed connection does not count against the limit.
    with pytest.raises(OSError):
        await c.post("http://127.0.0.1:9/", b"{}")


def test_only_plain_http() -> None:
    with pytest.raises(ValueError):
        FastClient("https://api.openai.com/v1", {}, limit=1, connect_s=1, read_s=1)


async def test_no_content_answer_has_no_body() -> None:
    server, stats = await serve(lambda request: [b"HTTP/1.1 204 No Content\r\n\r\n"])
    c = client(server)
    try:
        for _ in range(2):
            resp = await c.post(url(server) + "/", b"{}")
            assert resp.status == 204
            assert await resp.read() == b""
            resp.release()
    finally:
        await c.close()
        server.close()
    assert stats["connections"] == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=12), st.data())
def test_chunked_framing_survives_any_network_split(chunks: list[bytes], data: Any) -> None:
    wire = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

    async def run() -> tuple[bytes, int]:
        reader = asyncio.StreamReader()

        async def feed() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)

        feeder = asyncio.ensure_future(feed())
        conn = _Connection(reader, None)  # type: ignore[arg-type]
        resp = _FastResponse(
            None,  # type: ignore[arg-type]
            conn,
            200,
            {"transfer-encoding": "chunked"},
            read_s=1,
        )
        got = [piece async for piece in resp.iter_any()]
        await feeder
        return b"".join(got), len(got)

    body, n = asyncio.run(run())
    assert body == b"".join(chunks)
    assert n <= len(chunks)  # complete chunks that arrived together go out together
