"""An event loop on a daemon thread, for fakes that must keep answering while a test blocks
(a synchronous SDK call against a `serve` subprocess, say)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from tests.fakes.upstream import FakeUpstream

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-upstreams", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@contextlib.contextmanager
def running_fake(kind: str, loop: BackgroundLoop | None = None) -> Iterator[FakeUpstream]:
    """A started `FakeUpstream` on `loop` (a private one if none), stopped on exit."""
    own = loop is None
    bg = loop or BackgroundLoop()
    fake = FakeUpstream(kind)
    bg.run(fake.start())
    try:
        yield fake
    finally:
        bg.run(fake.stop())
        if own:
            bg.close()
