"""One `/metrics` view over the workers of `serve --workers N`.

With SO_REUSEPORT the kernel hands a scrape to any one worker, so each worker also serves its own
metrics on a Unix socket in a directory the supervisor made (`$HYBRIDFAST_WORKER_DIR`), and the
worker that receives `GET /metrics` reads its siblings' through those sockets and answers with all
of them, every sample labelled `worker="N"`. Counters are not summed: per-worker series keep a
restarted worker's reset visible to `rate()`, and `sum without (worker)` gives the total.

A single `serve` (no supervisor) has no directory and answers `/metrics` for itself, unlabelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("hybridfast.workers")

# What the supervisor tells each worker (see hybridfast.supervisor).
WORKER_ID_ENV = "HYBRIDFAST_WORKER_ID"
WORKERS_ENV = "HYBRIDFAST_WORKERS"
WORKER_DIR_ENV = "HYBRIDFAST_WORKER_DIR"
# A sibling that does not answer within this is left out of the scrape (it may be restarting).
SIBLING_TIMEOUT_S = 2.0


def worker_identity() -> tuple[str, Path] | None:
    """(this worker's id, the sockets' directory) under a supervisor; None for a lone serve."""
    directory = os.environ.get(WORKER_DIR_ENV)
    worker = os.environ.get(WORKER_ID_ENV)
    if not directory or worker is None:
        return None
    return worker, Path(directory)


def _socket(directory: Path, worker: str) -> Path:
    return directory / f"worker-{worker}.sock"


def metrics_socket_ctx(
    render: Callable[[], bytes],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that serves this worker's own metrics on its Unix socket (under a
    supervisor; nothing otherwise)."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        identity = worker_identity()
        if identity is None:
            yield
            return
        worker, directory = identity
        path = _socket(directory, worker)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous incarnation of this worker

        async def own(_request: web.Request) -> web.Response:
            return web.Response(body=render(), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", own)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        try:
            yield
        finally:
            await runner.cleanup()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    return ctx


async def _sibling(path: Path) -> tuple[str, str] | None:
    worker = path.stem.removeprefix("worker-")
    try:
        connector = aiohttp.UnixConnector(path=str(path))
        timeout = aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get("http://worker/metrics") as resp,
        ):
            return worker, await resp.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.debug("worker %s did not answer for /metrics: %s", worker, exc)
        return None


class _Merged:
    """A collector yielding the parsed families of every worker, each sample labelled."""

    def __init__(self, texts: list[tuple[str, str]]) -> None:
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker, text in self.texts:
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": worker}
                    target.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from merged.values()


async def all_workers_metrics(own: bytes) -> bytes:
    """Every worker's metrics in one exposition, labelled by worker; `own` when alone."""
    identity = worker_identity()
    if identity is None:
        return own
    worker, directory = identity
    siblings = [p for p in directory.glob("worker-*.sock") if p != _socket(directory, worker)]
    answers = await asyncio.gather(*(_sibling(p) for p in sorted(siblings)))
    texts = [(worker, own.decode()), *(a for a in answers if a is not None)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(texts))
    return generate_latest(registry)
