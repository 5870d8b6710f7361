"""`python -m tests.fakes --kind openai --port N`: a fake upstream as its own process.

Prints `ready <url>` on stdout once it accepts connections. Steer it with
`POST <root>/_fake/config` (JSON of switches, `{"fail": {"status": 429, "times": 2}}`,
`{"reset": true}`); `GET <root>/_fake/requests` returns what it received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from tests.fakes.upstream import KINDS, FakeUpstream


async def serve(args: argparse.Namespace) -> None:
    fake = FakeUpstream(args.kind, host=args.host, port=args.port)
    fake.set(
        chunks=args.chunks,
        first_byte_s=args.first_byte_ms / 1000,
        per_chunk_s=args.per_chunk_ms / 1000,
    )
    if args.reply is not None:
        fake.set(reply=args.reply)
    await fake.start()
    print(f"ready {fake.url}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fakes")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--chunks", type=int, default=9)
    p.add_argument("--first-byte-ms", type=float, default=0.0)
    p.add_argument("--per-chunk-ms", type=float, default=0.0)
    p.add_argument("--reply")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
