"""`hybridfast prompts list | lint`: the config's prompt templates and chains, and concrete
suggestions about them (missing system prompt, unused or undeclared variables, the token count
and expected cost on each model that could answer)."""

from __future__ import annotations

import argparse
import dataclasses

import orjson

from hybridfast.config import load_config
from hybridfast.experiments.chains import Prompts
from hybridfast.experiments.prompt_lint import Report, lint
from hybridfast.experiments.templates import Library


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompts", help="list and lint the config's prompt templates and chains")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config (its prompts section)")
    common.add_argument("--json", action="store_true", help="print JSON")
    listing = actions.add_parser(
        "list", parents=[common], help="templates (name@version -> model) and chains"
    )
    listing.set_defaults(handler=run_list)
    checking = actions.add_parser(
        "lint", parents=[common], help="suggestions and the cost per candidate model"
    )
    checking.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (not only errors)"
    )
    checking.set_defaults(handler=run_lint)


def run_list(args: argparse.Namespace) -> int:
    config = load_config(args.config).config
    library = Library.from_config(config)
    prompts = Prompts.compile(config.prompts, library)
    templates = [
        {
            "template": t.key,
            "model": t.config.model,
            "variables": ", ".join(f"{k}: {v}" for k, v in t.config.variables.items()),
            "description": t.config.description,
        }
        for t in library.all()
    ]
    chains = [
        {"chain": c.name, "steps": [f"{s.template.key} -> {s.model}" for s in c.steps]}
        for c in prompts.chains.values()
    ]
    if args.json:
        print(orjson.dumps({"templates": templates, "chains": chains}).decode())
        return 0
    for t in templates:
        print(f"template:{t['template']}  -> {t['model']}  ({t['variables'] or 'no variables'})")
    for c in chains:
        print(f"chain:{c['chain']}  " + " | ".join(c["steps"]))
    if not templates:
        print("no templates (add a `prompts:` section to the config)")
    return 0


def run_lint(args: argparse.Namespace) -> int:
    reports = lint(load_config(args.config).config)
    if args.json:
        print(orjson.dumps([dataclasses.asdict(r) for r in reports]).decode())
    else:
        for report in reports:
            _print(report)
    levels = {f.level for r in reports for f in r.findings}
    if "error" in levels or (args.strict and levels):
        return 1
    return 0


def _print(report: Report) -> None:
    print(f"template:{report.template} -> {report.model}")
    for f in report.findings:
        print(f"  {f.level}: {f.message}\n    suggestion: {f.suggestion}")
    for c in report.costs:
        print(
            f"  cost on {c.deployment} ({c.model}): {c.input_tokens} tokens in + "
            f"{c.output_tokens} out = ${c.cost_usd}"
        )
    if not report.findings:
        print("  ok")
