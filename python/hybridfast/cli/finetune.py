"""`hybridfast finetune export | candidates`: OpenAI fine-tuning JSONL from stored
conversations that passed a feedback filter, and the routes where a cheaper model could be
trained to take over (`hybridfast.experiments.finetune`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import TextIO

import orjson

from hybridfast._core import format_usd
from hybridfast.config import Config, load_config
from hybridfast.experiments import finetune
from hybridfast.ledger.stores import open_store


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("finetune", help="fine-tuning data and candidates from what was recorded")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config (its ledger section names the database)")
    common.add_argument("--metric", help="a feedback metric, e.g. thumbs_up")
    exp = actions.add_parser(
        "export",
        parents=[common],
        help="OpenAI fine-tuning JSONL from stored Responses conversations",
    )
    exp.add_argument(
        "--min",
        type=float,
        default=1.0,
        dest="min_value",
        help="keep conversations whose mean --metric is at least this (default 1)",
    )
    exp.add_argument("--output", "-o", help="write here instead of standard output")
    exp.set_defaults(handler=run_export)
    cand = actions.add_parser(
        "candidates",
        parents=[common],
        help="routes where an expensive model answers many requests a cheaper one could learn",
    )
    cand.add_argument(
        "--min-requests", type=int, default=100, help="ignore deployments with fewer answers"
    )
    cand.add_argument("--json", action="store_true", help="print JSON")
    cand.set_defaults(handler=run_candidates)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as f:
        yield f


def run_export(args: argparse.Namespace) -> int:
    config = load_config(args.config).config
    with _output(args.output) as out:
        result = finetune.export(config, out, args.metric, args.min_value)
    print(
        f"{result.written} examples written; {result.filtered_out} below the feedback filter; "
        f"{result.not_exportable} not expressible as fine-tuning data (images, audio)",
        file=sys.stderr,
    )
    return 0


def _ledger_entries(config: Config) -> list[dict[str, object]]:
    store = open_store(config.ledger, read_only=True)
    if store is None:
        return []
    try:
        return list(store.export(None, None))
    finally:
        store.close()


def run_candidates(args: argparse.Namespace) -> int:
    config = load_config(args.config).config
    metric = args.metric or "thumbs_up"
    store = finetune.feedback_store(config)
    try:
        feedback = list(store.rows())
    finally:
        store.close()
    found = finetune.candidates(
        config, _ledger_entries(config), feedback, metric, args.min_requests
    )
    if args.json:
        rows = [{**dataclasses.asdict(c), "saving_picos": c.saving_picos} for c in found]
        print(orjson.dumps(rows).decode())
        return 0
    for c in found:
        liked = "" if c.expensive_feedback is None else f", {metric} {c.expensive_feedback:.2f}"
        cheap_liked = "" if c.cheaper_feedback is None else f", {metric} {c.cheaper_feedback:.2f}"
        print(
            f"{c.route}: {c.expensive} answered {c.requests} requests for "
            f"${format_usd(c.cost_picos)}{liked}; the same tokens on {c.cheaper} "
            f"${format_usd(c.cheaper_cost_picos)}{cheap_liked} "
            f"(saving ${format_usd(c.saving_picos)} if a tuned {c.cheaper} can take them)"
        )
    if not found:
        print(f"no route with {args.min_requests}+ answers from a deployment dearer than another")
    return 0
