"""`hybridfast config check [PATH]`: load a config the way `serve` would and report on it."""

from __future__ import annotations

import argparse
import sys

from hybridfast.config import load_config
from hybridfast.experiments import chains as prompt_chains


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="check a configuration file")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser(
        "check", help="validate a config file (default: the one `serve` would load)"
    )
    check.add_argument(
        "path",
        nargs="?",
        help="the YAML file (default: $HYBRIDFAST_CONFIG, "
        "./hybridfast.yaml, else built-in defaults)",
    )
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    loaded = load_config(args.path)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = loaded.config
    if prompt_chains.wanted(config):
        prompt_chains.compile_prompts(config)  # templates and chains compile only past parsing
    groups = sorted(config.model_names())
    print(
        f"{loaded.source}: ok — {len(config.providers)} providers, {len(config.models)} "
        f"deployments in {len(groups)} groups, {len(config.routes)} routes, "
        f"{len(config.budgets)} budgets"
    )
    return 0
