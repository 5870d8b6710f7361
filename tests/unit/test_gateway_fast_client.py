"""The fast HTTP/1.1 client against hand-written servers: body framings, keep-alive reuse,
a stale idle connection, the connection limit, broken bodies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast.config import ProviderConfig
from hybridfast.providers import ProviderError, build_provider
from hybridfast.providers.http import (
    MAX_LINE_BYTES,
    FastClient,
    UpstreamProtocolError,
    _Connection,
    _FastResponse,
    capped_lines,
)

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
        limits = SimpleNamespace(idle_s=1.0, max_line=MAX_LINE_BYTES)
        resp = _FastResponse(
            limits,  # type: ignore[arg-type]
            conn,
            200,
            {"transfer-encoding": "chunked"},
            length=None,
            deadline=None,
        )
        got = [piece async for piece in resp.iter_any()]
        await feeder
        return b"".join(got), len(got)

    body, n = asyncio.run(run())
    assert body == b"".join(chunks)
    assert n <= len(chunks)  # complete chunks that arrived together go out together


# --- limits: every breach is a client error or a timeout, which the providers fall back on ---


def huge_head(request: bytes) -> list[bytes]:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    return [b"HTTP/1.1 200 OK\r\n" + filler + b"Content-Length: 2\r\n\r\n{}"]


def bad_length(request: bytes) -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}"]


@pytest.mark.parametrize("answer", [huge_head, bad_length])
async def test_malformed_heads_are_client_errors(answer: Handler) -> None:
    server, _ = await serve(answer, close_after=True)
    c = client(server)
    try:
        with pytest.raises(aiohttp.ClientError):
            await c.post(url(server) + "/", b"{}")
    finally:
        await c.close()
        server.close()


@pytest.mark.parametrize("answer", [huge_head, bad_length])
async def test_malformed_heads_become_provider_errors(answer: Handler) -> None:
    """A provider error is what the pipeline falls back on (the old client raised a
    ValueError or LimitOverrunError, which became a 500)."""
    server, _ = await serve(answer, close_after=True)
    provider = build_provider(
        ProviderConfig(
            name="up", kind="openai-compatible", base_url=url(server), http_client="fast"
        )
    )
    try:
        with pytest.raises(ProviderError):
            await provider.post_json("/chat/completions", {}, retries=0)
    finally:
        await provider.close()
        server.close()


async def trickle_server(
    head: bytes, pieces: int, gap_s: float, piece: bytes = b"x"
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            for _ in range(pieces):
                await asyncio.sleep(gap_s)
                writer.write(piece)
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_total_timeout_holds_while_bytes_trickle_without_newlines() -> None:
    # 200 one-byte pieces, one every 20 ms: never idle, never a line, ~4 s in all.
    server = await trickle_server(b"HTTP/1.1 200 OK\r\n\r\n", 200, 0.02)
    c = FastClient(url(server), {}, limit=1, connect_s=1, read_s=1, total_s=0.3)
    try:
        resp = await c.post(url(server) + "/", b"{}")
        with pytest.raises(TimeoutError):
            await collect(resp.iter_any())
        resp.close()
    finally:
        await c.close()
        server.close()


async def test_first_byte_timeout_is_for_the_first_byte_only() -> None:
    # A body that takes ~20 gaps of 50 ms: longer than read_s in all, no gap near it.
    server = await trickle_server(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n", 20, 0.05)
    c = FastClient(url(server), {}, limit=1, connect_s=1, read_s=0.5, total_s=30)
    try:
        resp = await c.post(url(server) + "/", b"{}")
        assert await resp.read() == b"x" * 20
        resp.release()
    finally:
        await c.close()
        server.close()


async def test_an_endless_line_is_cut_off() -> None:
    server = await trickle_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        40,
        0.0,
        b"100\r\n" + b"a" * 256 + b"\r\n",
    )
    c = FastClient(url(server), {}, limit=1, connect_s=1, read_s=2, max_line=4096)
    try:
        resp = await c.post(url(server) + "/", b"{}")
        with pytest.raises(aiohttp.ClientError, match="line over 4096"):
            await collect(resp.iter_any())
        resp.close()
    finally:
        await c.close()
        server.close()


async def test_lines_under_the_cap_pass_whatever_the_split() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for p in (b"ab", b"cd\nef", b"g\n", b"h" * 10, b"\n"):
            yield p

    assert await collect(capped_lines(pieces(), 10)) == b"abcd\nefg\n" + b"h" * 10 + b"\n"
    with pytest.raises(aiohttp.ClientError):
        await collect(capped_lines(pieces(), 9))


async def test_a_deadline_given_to_post_ends_the_exchange_sooner() -> None:
    # The provider's deadline for a whole call (retries included) bounds the body's reads
    # too, well before the client's own total_s.
    server = await trickle_server(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n", 40, 0.05)
    c = FastClient(url(server), {}, limit=1, connect_s=1, read_s=5, total_s=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        resp = await c.post(url(server) + "/", b"{}", started + 0.3)
        with pytest.raises(TimeoutError):
            await resp.read()
        resp.close()
        assert loop.time() - started < 1.5
    finally:
        await c.close()
        server.close()


async def test_a_first_byte_timeout_drops_the_connection() -> None:
    # Nothing answers: the wait ends at read_s with TimeoutError, and the connection is
    # not handed to the next call.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    c = FastClient(url(server), {}, limit=1, connect_s=1, read_s=0.2, total_s=30)
    try:
        with pytest.raises(TimeoutError):
            await c.post(url(server) + "/", b"{}")
        assert c._open == 0
        assert not c._idle
    finally:
        await c.close()
        server.close()


def _chunked_response(pieces: list[bytes], max_line: int) -> tuple[_FastResponse, Any]:
    reader = asyncio.StreamReader()

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    conn = _Connection(reader, None)  # type: ignore[arg-type]
    limits = SimpleNamespace(idle_s=1.0, max_line=max_line)
    resp = _FastResponse(
        limits,  # type: ignore[arg-type]
        conn,
        200,
        {"transfer-encoding": "chunked"},
        length=None,
        deadline=None,
    )
    return resp, feeder


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    st.data(),
)
def test_lines_of_a_chunked_body_survive_any_split(lines: list[bytes], data: Any) -> None:
    # The one-generator line reader of streams: the same lines however the body is cut
    # into chunks and the chunks into network reads.
    body = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    wire = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks if c)
    wire += b"0\r\n\r\n"
    splits = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    pieces = [wire[a:b] for a, b in zip([0, *splits], [*splits, len(wire)], strict=True)]

    async def run() -> list[bytes]:
        resp, feeder = _chunked_response(pieces, MAX_LINE_BYTES)
        got = [line async for batch in resp.lines() for line in batch]
        await feeder
        return got

    assert asyncio.run(run()) == lines


def test_lines_over_the_cap_are_cut_off_by_the_line_reader() -> None:
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (b"ok\n", b"a" * 40, b"a" * 40))

    async def run() -> list[bytes]:
        resp, feeder = _chunked_response([wire, b"0\r\n\r\n"], 64)
        got: list[bytes] = []
        try:
            async for batch in resp.lines():
                got += batch
        finally:
            feeder.cancel()
        return got

    with pytest.raises(UpstreamProtocolError):
        asyncio.run(run())
