"""What every provider adapter shares: the internal stream event, upstream errors, one
`ClientSession` per upstream, and retries with jittered backoff that honour `Retry-After`.

An adapter turns its wire format into batches of `StreamEvent`s (one batch per network
read, so a burst of SSE events costs one trip through the pipeline and one socket write)
and back; nothing buffers a whole stream.
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import orjson

from hybridfast.config import ProviderConfig
from hybridfast.errors import InvalidRequest
from hybridfast.providers.http import (
    AiohttpClient,
    FastClient,
    HttpClient,
    UpstreamResponse,
    split_lines,
)
from hybridfast.redact import scrub_with
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, StreamEvent, Usage

__all__ = ["Provider", "ProviderError", "StreamEvent", "stream_lines"]

# Statuses worth another attempt (here or on the next deployment).
RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Statuses that mean the request itself is wrong: no other deployment will like it better.
CLIENT_FAULT = frozenset({400, 404, 413, 422})
# A Retry-After longer than this is not waited for: the next deployment is tried instead.
MAX_RETRY_WAIT_S = 5.0


class ProviderError(Exception):
    """An upstream call that failed. `status` is the upstream's HTTP status (None for a
    connection failure or timeout); the message never carries a key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        client_fault: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.client_fault = client_fault

    @property
    def retryable(self) -> bool:
        return not self.client_fault and (self.status is None or self.status in RETRYABLE)


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from these APIs; fall back to our own backoff


def iter_lines(content: Any) -> AsyncIterator[list[bytes]]:
    """The complete lines of a streamed body (anything with `iter_any()`), one list per
    network read."""
    return split_lines(content.iter_any())


class Provider(ABC):
    """One upstream: its config, its shared session, and the calls the pipeline makes."""

    kind = "base"

    def __init__(self, config: ProviderConfig, default_base_url: str) -> None:
        self.config = config
        self.name = config.name
        self.base_url = (config.base_url or default_base_url).rstrip("/")
        headers = {"Content-Type": "application/json", **self.auth_headers()}
        headers.update(config.headers)
        t = config.timeout
        choice = config.http_client
        if choice == "auto":
            choice = "fast" if self.base_url.startswith("http://") else "aiohttp"
        self.client: HttpClient
        if choice == "fast":
            self.client = FastClient(
                self.base_url,
                headers,
                limit=config.max_connections,
                connect_s=t.connect_s,
                read_s=t.first_byte_s,
                idle_s=t.idle_s,
                total_s=t.total_s,
            )
        else:
            # One timer per call: `total` covers the whole exchange (a stream's last byte
            # too), `sock_read` the wait for the first byte and every gap after it.
            self.client = AiohttpClient(
                headers,
                limit=config.max_connections,
                timeout=aiohttp.ClientTimeout(
                    total=t.total_s,
                    connect=t.connect_s,
                    sock_connect=t.connect_s,
                    sock_read=t.first_byte_s,
                ),
            )

    def auth_headers(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        await self.client.close()

    # --- the calls (each adapter implements them) ---------------------------------------

    @abstractmethod
    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        """The whole answer of one upstream call."""

    @abstractmethod
    def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The answer as batches of events, as the upstream's bytes arrive."""

    async def embed(
        self,
        deployment: Deployment,
        inputs: list[str] | list[list[int]],
        *,
        dimensions: int | None,
    ) -> tuple[list[list[float]], Usage]:
        raise InvalidRequest(f"provider {self.name!r} ({self.kind}) does not serve embeddings")

    # --- HTTP with retries --------------------------------------------------------------

    def error_message(self, status: int, body: bytes) -> str:
        """The upstream's own error message, shortened, with anything key-like masked
        (OpenAI's 401 quotes part of the key it was sent)."""
        # Scrubbed whole, then shortened: a key cut in half no longer looks like one.
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.scrub(body.decode("utf-8", "replace"))[:200]
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            return self.scrub(str(err.get("message", "")))[:300]
        if isinstance(err, str):
            return self.scrub(err)[:300]
        return self.scrub(str(data))[:200]

    def scrub(self, text: str) -> str:
        """`text` through the one scrubber (`hybridfast.redact`), this provider's key
        included even where no config was installed (the Python API, tests)."""
        return scrub_with(text, [self.config.api_key] if self.config.api_key else [])

    async def open(
        self,
        path: str,
        body: dict[str, Any],
        *,
        retries: int,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """POSTs `body` and returns a response with a 2xx status (the caller reads and
        releases it), retrying retryable failures up to `retries` times; no try starts or
        waits past `deadline` (the loop's clock)."""
        data = orjson.dumps(body)
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                resp = await self.client.post(url, data, deadline)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                what = "timed out" if isinstance(exc, TimeoutError) else "cannot be reached"
                error = ProviderError(f"{self.name}: the upstream {what} ({type(exc).__name__})")
            else:
                if resp.status < 300:
                    return resp
                try:
                    raw = await resp.read()
                except (TimeoutError, aiohttp.ClientError):
                    raw = b""
                finally:
                    resp.release()
                error = ProviderError(
                    f"{self.name}: upstream answered {resp.status}: "
                    f"{self.error_message(resp.status, raw)}",
                    status=resp.status,
                    retry_after=retry_after_seconds(resp.header("retry-after")),
                    client_fault=resp.status in CLIENT_FAULT,
                )
            if attempt >= retries or not error.retryable:
                raise error
            wait = error.retry_after
            if wait is None:
                wait = min(2.0, 0.1 * 2**attempt) * (0.5 + random.random())
            if wait > MAX_RETRY_WAIT_S:
                raise error
            if deadline is not None and asyncio.get_running_loop().time() + wait >= deadline:
                raise ProviderError(f"{self.name}: the upstream timed out")
            attempt += 1
            await asyncio.sleep(wait)

    async def post_json(self, path: str, body: dict[str, Any], *, retries: int) -> Any:
        # The whole call, retries and their waits included, within timeout.total_s: the
        # clients hold each try to the deadline (one loop timer per wait, no second timer
        # around them).
        deadline = asyncio.get_running_loop().time() + self.config.timeout.total_s
        try:
            resp = await self.open(path, body, retries=retries, deadline=deadline)
            try:
                raw = await resp.read()
            except BaseException:
                resp.close()
                raise
            resp.release()
        except TimeoutError:
            raise ProviderError(f"{self.name}: the upstream timed out") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"{self.name}: the answer broke off ({type(exc).__name__})"
            ) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(f"{self.name}: the upstream answered invalid JSON") from None


async def stream_lines(
    provider: Provider, path: str, body: dict[str, Any], *, retries: int
) -> AsyncIterator[list[bytes]]:
    """The lines of a streamed answer, batched per network read. Failures before the
    first line raise `ProviderError` from `open`; a break later raises it from here. Leaving
    early closes the connection, which cancels the upstream's work."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + provider.config.timeout.total_s
    resp = await provider.open(path, body, retries=retries, deadline=deadline)
    finished = False
    try:
        async for lines in resp.lines():
            yield lines
            if loop.time() > deadline:
                raise ProviderError(f"{provider.name}: the stream ran past timeout.total_s")
        finished = True
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise ProviderError(
            f"{provider.name}: the stream broke off ({type(exc).__name__})"
        ) from None
    finally:
        if finished:
            resp.release()
        else:
            resp.close()
