"""The HTTP clients the provider adapters talk through.

`AiohttpClient` is aiohttp's `ClientSession` (TLS, proxies, every corner of HTTP): what
cloud APIs get, where a model call takes hundreds of milliseconds anyway. `FastClient` is a
small keep-alive HTTP/1.1 client over asyncio streams for plain-`http://` upstreams —
Ollama, vLLM, llama.cpp on this machine or the local network — where the gateway's own cost
per request is what users notice: it spends about a fifth of aiohttp's CPU per call.
`ProviderConfig.http_client` chooses (`auto`: fast for http://, aiohttp for https://).

Both hand back an `UpstreamResponse`: the status, the headers the adapters read, and the
body read whole or as it arrives. `release()` returns a fully read connection to the pool;
`close()` drops it (for a stream left early this is what cancels the upstream's work).

Limits hold for both clients, and every breach is an `aiohttp.ClientError` or a
`TimeoutError`, which the adapters turn into a provider error that falls back: a response
head over `MAX_HEAD_BYTES`, a malformed `Content-Length`, a line of a streamed body over
`MAX_LINE_BYTES`; timeouts: the first byte of the answer (`first_byte_s`), every gap after
it (`idle_s`), and the whole exchange (`total_s`), however the bytes trickle in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

# aiohttp refuses response heads past 8 KiB per line; this bounds the whole head.
MAX_HEAD_BYTES = 64 * 1024
# No SSE event or NDJSON line of a real answer comes near this; without a cap one endless
# line would be buffered whole.
MAX_LINE_BYTES = 8 * 1024 * 1024


class UpstreamResponse(Protocol):
    status: int

    def header(self, name: str) -> str | None:
        """A response header by its lower-case name."""

    async def read(self) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces the network delivered."""

    def lines(self) -> AsyncIterator[list[bytes]]:
        """The body's complete lines (without their newlines), one list per network read;
        a line over the client's cap raises `UpstreamProtocolError`."""

    def release(self) -> None: ...

    def close(self) -> None: ...


# Headers for the calls the current task makes, besides the client's own (a trace's
# `traceparent`, set per attempt by the tracing hooks). Empty for nearly every call: one
# context-variable read.
CALL_HEADERS: ContextVar[dict[str, str] | None] = ContextVar(
    "hybridfast_call_headers", default=None
)


class HttpClient(Protocol):
    async def post(self, url: str, body: bytes, deadline: float | None = None) -> UpstreamResponse:
        """Sends a POST; returns once the response head arrived. `deadline` (the loop's
        clock) ends the whole exchange sooner than the client's own `total_s`. Raises
        `TimeoutError`, `OSError` or `aiohttp.ClientError` when the upstream cannot be
        reached."""

    async def close(self) -> None: ...


# --- aiohttp -----------------------------------------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_max_line", "_resp", "status")

    def __init__(self, resp: aiohttp.ClientResponse, max_line: int = MAX_LINE_BYTES) -> None:
        self._resp = resp
        self.status = resp.status
        self._max_line = max_line

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    async def read(self) -> bytes:
        return await self._resp.read()

    def iter_any(self) -> AsyncIterator[bytes]:
        return capped_lines(self._resp.content.iter_any(), self._max_line)

    def lines(self) -> AsyncIterator[list[bytes]]:
        return split_lines(self.iter_any())

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class AiohttpClient:
    def __init__(
        self, headers: dict[str, str], *, limit: int, timeout: aiohttp.ClientTimeout
    ) -> None:
        self._headers = headers
        self._limit = limit
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit,
                keepalive_timeout=30,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(self, url: str, body: bytes, deadline: float | None = None) -> UpstreamResponse:
        extra = CALL_HEADERS.get()
        if deadline is None:
            return _AiohttpResponse(await self.session.post(url, data=body, headers=extra))
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        total = left if self._timeout.total is None else min(left, self._timeout.total)
        timeout = aiohttp.ClientTimeout(
            total=total,
            connect=self._timeout.connect,
            sock_connect=self._timeout.sock_connect,
            sock_read=self._timeout.sock_read,
        )
        resp = await self.session.post(url, data=body, headers=extra, timeout=timeout)
        return _AiohttpResponse(resp)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


# --- the fast client -----------------------------------------------------------------------


class UpstreamProtocolError(aiohttp.ClientError):
    """The upstream's bytes are not HTTP/1.1 as expected, or break a limit (a subclass of
    aiohttp's errors so the adapters treat both clients' failures alike)."""


async def capped_lines(pieces: AsyncIterator[bytes], max_line: int) -> AsyncIterator[bytes]:
    """`pieces` unchanged, but a line (bytes between newlines) longer than `max_line`
    raises `UpstreamProtocolError` instead of growing a buffer without end. (Lines wholly
    inside one piece are as long as the piece at most, and the piece is in memory already.)"""
    run = 0  # bytes since the last newline
    async for piece in pieces:
        first = piece.find(b"\n")
        if first < 0:
            run += len(piece)
        else:
            run += first
            if run <= max_line:
                run = len(piece) - piece.rfind(b"\n") - 1
        if run > max_line:
            raise UpstreamProtocolError(f"the upstream sent a line over {max_line} bytes")
        yield piece


async def split_lines(pieces: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The complete lines of a body that arrives in `pieces`, one list per piece that
    completed any; a last line without its newline comes at the end."""
    rest = b""
    async for data in pieces:
        if rest:
            data = rest + data
        lines = data.split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines
    if rest:
        yield [rest]


class _Connection:
    __slots__ = ("reader", "timed_out", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.timed_out = False

    def expire(self) -> None:
        """A wait ran past its limit (a loop timer calls this): the connection is dropped,
        which wakes the waiting read with an error that the reader turns into
        `TimeoutError`. One `call_at` per wait instead of an `asyncio.timeout` block: no
        Timeout object, no task cancel/uncancel, and the timer is dropped as cheaply."""
        self.timed_out = True
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _FastResponse:
    __slots__ = (
        "_buf",
        "_chunked",
        "_client",
        "_conn",
        "_deadline",
        "_done",
        "_headers",
        "_idle_s",
        "_keep",
        "_left",
        "_loop",
        "_max_line",
        "status",
    )

    def __init__(
        self,
        client: FastClient,
        conn: _Connection,
        status: int,
        headers: dict[str, str],
        length: int | None,
        deadline: float | None,
    ) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status = status
        self._headers = headers
        self._idle_s = client.idle_s
        self._deadline = deadline
        self._max_line = client.max_line
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._left: int | None = None if self._chunked else length
        if status in (204, 304) or status < 200:
            self._chunked, self._left = False, 0  # no body, whatever the headers say
        # Without a length or chunks the body runs to the end of the connection.
        self._keep = (self._chunked or self._left is not None) and headers.get(
            "connection", ""
        ).lower() != "close"
        self._done = self._left == 0
        self._buf = bytearray()
        self._loop = asyncio.get_running_loop()

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def _take_chunks(self) -> bytes:
        """The data of every complete chunk in the buffer, consumed."""
        buf = self._buf
        # One copy of the buffer, then slices of it: a stream's read holds a score of small
        # chunks, and slicing the bytearray copied each twice.
        data = bytes(buf)
        size_of = len(data)
        pos = 0
        out: list[bytes] = []
        while True:
            end = data.find(b"\r\n", pos)
            if end < 0:
                if size_of - pos > 1024:  # a chunk-size line is a few hex digits
                    raise ValueError("chunk size line too long")
                break
            line = data[pos:end]
            semi = line.find(b";")
            size = int(line if semi < 0 else line[:semi], 16)
            if size < 0:
                raise ValueError("negative chunk size")
            if size == 0:
                if size_of < end + 4:  # the final CRLF (these APIs send no trailers)
                    break
                pos = end + 4
                self._done = True
                break
            start = end + 2
            if size_of < start + size + 2:
                break
            out.append(data[start : start + size])
            pos = start + size + 2
        if pos:
            del buf[:pos]
        return out[0] if len(out) == 1 else b"".join(out)

    async def _read(self, conn: _Connection, n: int) -> bytes:
        """Up to `n` bytes as they arrive, within the idle limit (cut short by the total
        deadline)."""
        when = None if self._idle_s is None else self._loop.time() + self._idle_s
        if self._deadline is not None:
            when = self._deadline if when is None else min(when, self._deadline)
        timer = None if when is None else self._loop.call_at(when, conn.expire)
        try:
            data = await conn.reader.read(n)
        except ConnectionError:
            if conn.timed_out:
                raise TimeoutError from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not data and conn.timed_out:
            raise TimeoutError
        return data

    async def _next(self) -> bytes:
        """The next piece of the body (b"" at its end)."""
        try:
            return await self._next_piece()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise aiohttp.ClientPayloadError(
                f"the upstream broke off the body ({type(exc).__name__})"
            ) from None
        except ValueError:
            raise UpstreamProtocolError("the upstream's chunked body is malformed") from None

    async def _next_piece(self) -> bytes:
        conn = self._conn
        if self._done or conn is None:
            return b""
        if self._chunked:
            # The framing is parsed here from whatever arrived, rather than with a
            # readuntil/readexactly pair per chunk: every piece already here goes out in
            # one trip through the pipeline, at a fraction of the calls.
            while True:
                data = self._take_chunks()
                if data or self._done:
                    return data
                more = await self._read(conn, 1 << 16)
                if not more:
                    raise asyncio.IncompleteReadError(bytes(self._buf), None)
                self._buf += more
        if self._left is not None:
            data = await self._read(conn, min(self._left, 1 << 16))
            if not data:
                raise UpstreamProtocolError("the upstream closed the body short")
            self._left -= len(data)
            self._done = self._left == 0
            return data
        data = await self._read(conn, 1 << 16)
        if not data:
            self._done = True
        return data

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            piece = await self._next()
            if not piece:
                return b"".join(parts)
            parts.append(piece)

    def iter_any(self) -> AsyncIterator[bytes]:
        return capped_lines(self._pieces(), self._max_line)

    async def _pieces(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self._next()
            if not piece:
                return
            yield piece

    async def lines(self) -> AsyncIterator[list[bytes]]:
        # `split_lines(capped_lines(pieces))` in one generator: a stream's every read passes
        # through here, and each generator layer costs a resumption per read.
        rest = b""
        cap = self._max_line
        while True:
            piece = await self._next()
            if not piece:
                break
            data = rest + piece if rest else piece
            lines = data.split(b"\n")
            rest = lines.pop()
            if len(data) > cap and (len(rest) > cap or any(len(x) > cap for x in lines)):
                raise UpstreamProtocolError(f"the upstream sent a line over {cap} bytes")
            if lines:
                yield lines
        if rest:
            yield [rest]

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep:
            self._client._put(conn)
        else:
            conn.close()
            self._client._drop()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            self._client._drop()


def _encoded(headers: dict[str, str] | None) -> bytes:
    if not headers:
        return b""
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")


class FastClient:
    """Keep-alive HTTP/1.1 over plain TCP to one upstream, at most `limit` connections.

    `read_s` bounds the wait for the answer's first byte, `idle_s` (default: `read_s`) each
    gap after it, `total_s` the whole exchange from the request's first byte."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        limit: int,
        connect_s: float | None,
        read_s: float | None,
        idle_s: float | None = None,
        total_s: float | None = None,
        max_line: int = MAX_LINE_BYTES,
        max_head: int = MAX_HEAD_BYTES,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the fast client speaks plain http only, not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        host = url.netloc.rpartition("@")[2]  # keeps [brackets] of IPv6 and the port
        fixed = {"Host": host, "Accept": "*/*", **headers}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._limit = limit
        self._connect_s = connect_s
        self._read_s = read_s
        self.idle_s = read_s if idle_s is None else idle_s
        self.total_s = total_s
        self.max_line = max_line
        self._max_head = max_head
        self._idle: list[_Connection] = []
        self._open = 0  # connections in use or idle
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    def _put(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            self._drop()
            return
        self._idle.append(conn)
        self._wake()

    def _drop(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(self) -> tuple[_Connection, bool]:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if not conn.writer.is_closing() and not conn.reader.at_eof():
                    return conn, True
                conn.close()
                self._open -= 1
            if self._open < self._limit:
                self._open += 1
                try:
                    async with asyncio.timeout(self._connect_s):
                        reader, writer = await asyncio.open_connection(
                            self.host, self.port, limit=self._max_head
                        )
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
                return _Connection(reader, writer), False
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise

    async def post(self, url: str, body: bytes, deadline: float | None = None) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        if self.total_s is not None:
            mine = loop.time() + self.total_s
            deadline = mine if deadline is None else min(deadline, mine)
        path = urlsplit(url).path or "/"
        request = (
            b"POST "
            + path.encode("latin-1")
            + b" HTTP/1.1\r\n"
            + self._head
            + _encoded(CALL_HEADERS.get())
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        first_byte_by = None if self._read_s is None else loop.time() + self._read_s
        if deadline is not None:
            first_byte_by = deadline if first_byte_by is None else min(first_byte_by, deadline)
        for _ in range(2):
            conn, reused = await self._acquire()
            timer = None if first_byte_by is None else loop.call_at(first_byte_by, conn.expire)
            try:
                conn.writer.write(request)
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                conn.close()
                self._drop()
                if conn.timed_out:
                    raise TimeoutError from None
                if reused:
                    continue  # the upstream had closed the idle connection: one fresh try
                raise aiohttp.ClientConnectionError(str(exc) or type(exc).__name__) from None
            except asyncio.LimitOverrunError:
                conn.close()
                self._drop()
                raise UpstreamProtocolError(
                    f"the upstream's response head is over {self._max_head} bytes"
                ) from None
            except BaseException:
                conn.close()
                self._drop()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            try:
                status, headers, length = _parse_head(head)
            except (ValueError, IndexError):
                conn.close()
                self._drop()
                raise UpstreamProtocolError("the upstream's answer is not HTTP/1.1") from None
            return _FastResponse(self, conn, status, headers, length, deadline)
        raise aiohttp.ClientConnectionError("the upstream keeps closing the connection")

    async def close(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str], int | None]:
    """Status, headers by lower-case name, and the Content-Length (None: not sent);
    `ValueError` for anything that is not a well-formed HTTP/1.x head."""
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    if not status_line.startswith("HTTP/1.") or not status_line[9:12].isdigit():
        raise ValueError(status_line)
    status = int(status_line[9:12])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    raw_length = headers.get("content-length")
    length = None
    if raw_length is not None:
        # Digits only: int() would take "+5", " 5" or "5_0"; several differing values
        # ("5, 6") are a smuggling attempt, not a length.
        if not raw_length.isascii() or not raw_length.isdigit():
            raise ValueError(f"Content-Length: {raw_length!r}")
        length = int(raw_length)
    return status, headers, length
