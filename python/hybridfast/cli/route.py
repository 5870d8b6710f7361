"""`hybridfast route "prompt"`: one request through the same pipeline as the server, no
HTTP. The answer goes to stdout (token by token with `--stream`); the deployment, tokens,
cost and latency to stderr. `--dry-run` prints the routing decision without calling any
model; `--explain` prints it before the answer."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson

from hybridfast.config import load_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "route", help="send one prompt through the gateway's pipeline and print the answer"
    )
    p.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    p.add_argument("--model", default="auto", help="model group or route (default: auto)")
    p.add_argument("--system", help="a system prompt")
    p.add_argument("--max-tokens", type=int, help="cap on the answer's tokens")
    p.add_argument("--temperature", type=float)
    p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    p.add_argument("--json", action="store_true", help="print the answer and its facts as JSON")
    p.add_argument("--explain", action="store_true", help="print the routing decision first")
    p.add_argument(
        "--dry-run", action="store_true", help="print the routing decision; call no model"
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--config", help="YAML config (default: as for serve)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from hybridfast.pipeline.context import RequestContext
    from hybridfast.pipeline.gateway import Gateway
    from hybridfast.routing import describe_plan

    loaded = load_config(args.config)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    messages = [{"role": "user", "content": prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    params: dict[str, object] = {}
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.no_cache:
        params["cache_control"] = "no-store"
    async with Gateway(loaded.config, discover=loaded.source == "<defaults>") as gw:
        request = gw.request(messages, model=args.model, stream=args.stream, **params)
        if args.dry_run or args.explain:
            print(describe_plan(gw.plan(request)), file=sys.stdout if args.dry_run else sys.stderr)
            if args.dry_run:
                return 0
        info = RequestContext(request.model, stream=request.stream)
        started = time.perf_counter()
        if args.stream:
            parts: list[str] = []
            events = gw.stream_events(request, info)
            try:
                async for batch in events:
                    for event in batch:
                        if event.text:
                            parts.append(event.text)
                            if not args.json:
                                sys.stdout.write(event.text)
                                sys.stdout.flush()
            finally:
                await events.aclose()
            text = "".join(parts)
            if not args.json:
                sys.stdout.write("\n")
        else:
            answer = await gw.complete(request, info)
            text = answer.content
            if not args.json:
                print(text)
        elapsed_ms = (time.perf_counter() - started) * 1000
        u = info.usage
        if args.json:
            print(
                orjson.dumps(
                    {
                        "text": text,
                        "model": request.model,
                        "latency_ms": round(elapsed_ms, 3),
                        "usage": {
                            "input_tokens": u.input_tokens,
                            "output_tokens": u.output_tokens,
                            "cached_input_tokens": u.cached_input_tokens,
                            "estimated": u.estimated,
                        },
                        **info.meta(),
                    },
                    option=orjson.OPT_INDENT_2,
                ).decode()
            )
        print(
            f"deployment {info.deployment_id} · tokens {u.input_tokens} in / "
            f"{u.output_tokens} out{' (estimated)' if u.estimated else ''} · "
            f"cost ${info.cost_usd} · {elapsed_ms:.1f} ms · cache {info.cache}",
            file=sys.stderr,
        )
    return 0
