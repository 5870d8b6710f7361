"""`hybridfast cache ...`: inspect and invalidate a running gateway's cache, and measure
how a semantic setting separates paraphrases from near-misses.

- `cache stats` / `cache clear` / `cache invalidate --model M --team T --key HEX`: call the
  admin API of a running `serve` (`--url`, master key from `--master-key` or
  `$HYBRIDFAST_MASTER_KEY`).
- `cache eval [FILE] --embedder minilm|hashing [--threshold T] [--guards a,b]`: the
  paraphrase/near-miss evaluation of the README on a JSONL file (default: the shipped set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hybridfast.errors import GatewayError, InvalidRequest

DEFAULT_SET = Path(__file__).resolve().parents[3] / "tests" / "data" / "cache_paraphrases.jsonl"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cache", help="inspect, invalidate or evaluate the response cache")
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def admin(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help)
        a.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
        a.add_argument("--master-key", default=os.environ.get("HYBRIDFAST_MASTER_KEY"))
        return a

    admin("stats", "the running gateway's cache stats").set_defaults(handler=run_stats)
    admin("clear", "drop every cached answer").set_defaults(handler=run_clear)
    inv = admin("invalidate", "drop one entry, or every entry of a model and/or tenant")
    inv.add_argument("--key", help="an entry key (32 hex digits, see /admin/cache/entries)")
    inv.add_argument("--model")
    inv.add_argument("--team")
    inv.add_argument("--key-name", help="the name of a virtual key (its tenant)")
    inv.set_defaults(handler=run_invalidate)

    ev = actions.add_parser("eval", help="hit and false-hit rates on a paraphrase set")
    ev.add_argument("file", nargs="?", default=str(DEFAULT_SET))
    ev.add_argument("--embedder", default="minilm", help="minilm or hashing")
    ev.add_argument("--threshold", type=float, help="default: the embedder's default")
    ev.add_argument("--guards", default="numbers,negation,entities,antonyms")
    ev.set_defaults(handler=run_eval)


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(args.url.rstrip("/") + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if args.master_key:
        req.add_header("authorization", f"Bearer {args.master_key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise GatewayError(
            f"{method} {path}: HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        ) from None
    except OSError as exc:
        raise GatewayError(
            f"cannot reach {args.url} ({exc})", hint="is `hybridfast serve` running there?"
        ) from None


def run_stats(args: argparse.Namespace) -> int:
    print(json.dumps(_call(args, "GET", "/admin/cache"), indent=2))
    return 0


def run_clear(args: argparse.Namespace) -> int:
    print(json.dumps(_call(args, "DELETE", "/admin/cache")))
    return 0


def run_invalidate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.key:
        body["key"] = args.key
    for name in ("model", "team", "key_name"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if not body:
        raise InvalidRequest("give --key, --model, --team or --key-name")
    print(json.dumps(_call(args, "POST", "/admin/cache/invalidate", body)))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from hybridfast._core import HashingEmbedder
    from hybridfast.cache import quality
    from hybridfast.cache.semantic import DEFAULT_THRESHOLDS, FALLBACK_THRESHOLD

    if args.embedder == "hashing":
        embedder: quality.TextEmbedder = HashingEmbedder(384)
    else:
        from hybridfast.embeddings.local import load_embedder

        embedder = load_embedder(args.embedder)
    threshold = args.threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(embedder.name, FALLBACK_THRESHOLD)
    guards = tuple(g for g in args.guards.split(",") if g)
    triples = quality.load_triples(args.file)
    prepared = quality.prepare(embedder, triples)
    result = quality.score(prepared, threshold, guards)
    print(json.dumps({"embedder": embedder.name, **result.as_dict()}, indent=2))
    sys.stdout.flush()
    return 0
