"""`hybridfast experiments ...`:

- `results`: the running gateway's adaptive A/B experiments (`GET /admin/experiments`): each
  route's status and winner, and per arm the judged answers, mean, 95% interval, probability
  of being best and expected loss (`--json` for the API's own object).
- `train-router`: trains the learned router (a logistic classifier on MiniLM embeddings of
  prompts) from a labelled JSONL file, or from the gateway's own feedback joined with the
  prompt embeddings it kept (`--from-feedback`), and calibrates its threshold for a target
  quality; prints the cost/quality trade-off on the held-out rows."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from hybridfast.cli import admin_api
from hybridfast.config import load_config
from hybridfast.errors import InvalidRequest
from hybridfast.experiments.learned import train_from_rows, train_from_vectors
from hybridfast.experiments.training import feedback_data, open_for_training


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("experiments", help="A/B results; train the learned router")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    results = admin_api.add_arguments(
        actions.add_parser("results", help="the running gateway's A/B experiments, per arm")
    )
    results.add_argument("--json", action="store_true", help="the admin API's JSON as it is")
    results.set_defaults(handler=run_results)
    train = actions.add_parser(
        "train-router", help='fit on JSONL rows {"prompt": ..., "cheap_ok": true|false}'
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="the labelled JSONL file")
    source.add_argument(
        "--from-feedback",
        action="store_true",
        help="the feedback on answers of the routes in router_training.routes (needs "
        "--metric and --cheap)",
    )
    train.add_argument("--config", help="with --from-feedback: the config `serve` uses")
    train.add_argument("--metric", help="with --from-feedback: the feedback metric to learn")
    train.add_argument(
        "--cheap", help="with --from-feedback: the cheap model group or deployment id"
    )
    train.add_argument(
        "--good",
        type=float,
        default=0.5,
        help="with --from-feedback: the mean feedback value that counts as good (0.5)",
    )
    train.add_argument("--route", help="with --from-feedback: only this route's requests")
    train.add_argument(
        "--target-quality",
        type=float,
        default=0.95,
        help="the share of requests that must be answered well (default 0.95)",
    )
    train.add_argument(
        "--holdout", type=float, default=0.3, help="the share kept for calibration (0.3)"
    )
    train.add_argument("--output", "-o", required=True, help="the model file to write (.npz)")
    train.set_defaults(handler=run_train)


def _rows(path: str) -> list[dict[str, object]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"{path}:{number}: not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise InvalidRequest(f"{path}:{number}: needs a string `prompt`")
            if not isinstance(row.get("cheap_ok"), bool | int):
                raise InvalidRequest(f"{path}:{number}: needs a boolean `cheap_ok`")
            rows.append(row)
    return rows


def run_train(args: argparse.Namespace) -> int:
    if not 0.0 < args.target_quality <= 1.0:
        raise InvalidRequest("--target-quality must be in (0, 1]")
    if args.from_feedback:
        model, chosen, baselines = _train_from_feedback(args)
    else:
        model, chosen, baselines = train_from_rows(
            _rows(args.data), args.target_quality, args.holdout
        )
    model.save(args.output, quality=chosen.quality, cheap_share=chosen.cheap_share, **baselines)
    print(
        f"threshold {chosen.threshold:.4f}: on {int(baselines['held_out'])} held-out prompts "
        f"{chosen.cheap_share:.1%} go to the cheap model at quality {chosen.quality:.1%} "
        f"(all to the cheap model: {baselines['all_cheap_quality']:.1%}; all to the strong "
        f"one: 100%); written to {args.output}",
        file=sys.stderr,
    )
    return 0


def _train_from_feedback(args: argparse.Namespace) -> Any:
    if not args.metric or not args.cheap:
        raise InvalidRequest("--from-feedback needs --metric NAME and --cheap MODEL")
    config = load_config(args.config).config
    samples, feedback = open_for_training(config)
    try:
        data = feedback_data(
            samples,
            feedback,
            metric=args.metric,
            cheap=args.cheap,
            good=args.good,
            route=args.route,
        )
    finally:
        samples.close()
        feedback.close()
    print(f"training on {data.describe()}", file=sys.stderr)
    return train_from_vectors(
        data.x, data.cheap_ok, args.target_quality, args.holdout, embedder=data.embedder
    )


def run_results(args: argparse.Namespace) -> int:
    data = admin_api.call(args, "GET", "/admin/experiments")
    if args.json:
        admin_api.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    experiments = data.get("experiments", [])
    if not experiments:
        admin_api.write("no experiment yet (a route with `router: bandit` starts one)")
    for x in experiments:
        state = f"stopped, winner {x['winner']}" if x["status"] == "stopped" else "running"
        admin_api.write(
            f"{x['route']} ({x['metric']}): {state}; min {x['min_samples']} judged per arm, "
            f"stops below expected loss {x['max_loss']}"
        )
        lines = [("arm", "judged", "mean", "95% interval", "P(best)", "expected loss")]
        for arm in x["arms"]:
            low, high = arm["ci95"]
            mean = "-" if arm["mean"] is None else f"{arm['mean']:.1%}"
            lines.append(
                (
                    arm["arm"],
                    f"{arm['n']:g}",
                    mean,
                    f"{low:.1%} - {high:.1%}",
                    f"{arm['p_best']:.1%}",
                    f"{arm['expected_loss']:g}",
                )
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
        for row in lines:
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            admin_api.write(("  " + "  ".join(cells)).rstrip())
    return 0
