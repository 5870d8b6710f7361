"""`hybridfast embed FILE|- [--model minilm] [--batch 256] > out.jsonl`: embed a file of texts.

Each input line is one text, or with `--jsonl` a JSON object with `text` (and an optional
`id`, copied to the output). Each output line is `{"index": i, ["id": ...,] "embedding":
[...]}` in input order. It goes through the same pipeline as `POST /v1/embeddings` (router,
fallback, per-text cache, ledger), in-process, with `batch` priority, keeping a few requests
in flight so the local model's batcher stays busy. A progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from hybridfast.config import load_config
from hybridfast.errors import InvalidRequest
from hybridfast.pipeline.context import RequestContext
from hybridfast.types import EmbeddingRequest

# Requests in flight at once: enough to keep a batch forming while one runs.
IN_FLIGHT = 4


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "embed",
        help="embed the lines of a file (or stdin) and write JSON lines to stdout",
    )
    p.add_argument("file", help="a text file with one input per line, or - for stdin")
    p.add_argument("--model", default="minilm", help="model or route name (default: minilm)")
    p.add_argument(
        "--batch", type=int, default=256, help="inputs per request to the pipeline (default 256)"
    )
    p.add_argument("--dimensions", type=int, help="ask for shorter vectors where allowed")
    p.add_argument("--jsonl", action="store_true", help='input lines are {"text": ..., "id": ...}')
    p.add_argument("--config", help="YAML config (default: as for serve)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise InvalidRequest("--batch must be at least 1")
    if args.file == "-":
        total = None
        return asyncio.run(_run(args, sys.stdin, total))
    try:
        with open(args.file, "rb") as counting:
            total = sum(1 for line in counting if line.strip())
        with open(args.file, encoding="utf-8") as source:
            return asyncio.run(_run(args, source, total))
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read {args.file}: {exc.strerror}", hint="pass an existing file, or - for stdin"
        ) from None


def _records(source: IO[str], jsonl: bool) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(source, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not jsonl:
            yield line, None
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"line {number}: not JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise InvalidRequest(f'line {number}: expected an object with a string "text"')
        yield item["text"], item.get("id")


def _chunks(records: Iterator[tuple[str, Any]], size: int) -> Iterator[list[tuple[str, Any]]]:
    chunk: list[tuple[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Progress:
    """`[#####-----] 1200/5000 texts  350/s` on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.started = time.perf_counter()
        self._drawn = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._drawn > 0.1 or self.done == self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        if self.total:
            filled = int(30 * self.done / self.total)
            bar = f"[{'#' * filled}{'-' * (30 - filled)}] {self.done}/{self.total}"
        else:
            bar = f"{self.done}"
        sys.stderr.write(f"\r{bar} texts  {rate:,.0f}/s ")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            sys.stderr.write("\n")
            sys.stderr.flush()


async def _run(args: argparse.Namespace, source: IO[str], total: int | None) -> int:
    from hybridfast.embeddings.batcher import BATCH
    from hybridfast.pipeline.gateway import Gateway

    config = load_config(args.config).config
    progress = Progress(total, enabled=not args.no_progress)
    out = sys.stdout.buffer
    async with Gateway(config) as gateway:
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(IN_FLIGHT)

        async def one(chunk: list[tuple[str, Any]], first: int) -> bytes:
            request = EmbeddingRequest(
                model=args.model,
                inputs=[text for text, _ in chunk],
                dimensions=args.dimensions,
                priority=BATCH,
            )
            ctx = RequestContext(args.model, endpoint="embeddings")
            result = await gateway.embed_request(request, ctx)
            lines = []
            for offset, ((_, ident), row) in enumerate(zip(chunk, result.vectors, strict=True)):
                item: dict[str, Any] = {"index": first + offset}
                if ident is not None:
                    item["id"] = ident
                item["embedding"] = row
                lines.append(orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY))
            progress.add(len(chunk))
            return b"\n".join(lines) + b"\n"

        async def produce() -> None:
            first = 0
            try:
                for chunk in _chunks(_records(source, args.jsonl), args.batch):
                    await pending.put(asyncio.create_task(one(chunk, first)))
                    first += len(chunk)
            finally:
                await pending.put(None)

        producer = asyncio.create_task(produce())
        try:
            # Written in input order as each request finishes.
            while (task := await pending.get()) is not None:
                out.write(await task)
            await producer
        finally:
            producer.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if left is not None:
                    left.cancel()
            out.flush()
    progress.finish()
    return 0
