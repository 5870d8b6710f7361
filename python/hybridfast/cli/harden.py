"""`hybridfast harden`: security checks of this machine and deployment, each with a status
(pass / warn / fail / unknown) and its evidence; `--json` for tools, exit 1 on any fail."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from hybridfast.config import find_config_path, load_config
from hybridfast.security import harden_checks, harden_hw
from hybridfast.security.harden import (
    DEFAULT_OSV_URL,
    Probe,
    Result,
    env_files_near,
    render_text,
    summary_counts,
)

CHECKS: tuple[Callable[[Probe], Result], ...] = (
    harden_checks.check_mac,
    harden_checks.check_firewall,
    harden_checks.check_exposure,
    harden_checks.check_permissions,
    harden_checks.check_key_scan,
    harden_checks.check_dependencies,
    harden_hw.check_gpu_ecc,
    harden_hw.check_memory_ecc,
    harden_hw.check_rowhammer,
)


def run_checks(probe: Probe) -> list[Result]:
    return [check(probe) for check in CHECKS]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("harden", help="check this machine and deployment; exit 1 on a failure")
    p.add_argument("--config", help="the YAML config serve uses (default as for serve)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--scan", action="append", default=[], metavar="PATH",
        help="file or directory to scan for API keys (repeat; default: the working directory)",
    )  # fmt: skip
    p.add_argument("--history", action="store_true", help="scan shell histories for keys too")
    p.add_argument("--git-history", action="store_true", help="scan `git log -p` of --scan paths")
    p.add_argument("--offline", action="store_true", help="do not query the OSV database")
    p.add_argument("--osv-url", default=DEFAULT_OSV_URL, help="the OSV querybatch endpoint")
    p.add_argument("--root", default="/", help="check a system mounted here (default: /)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    config_path = find_config_path(args.config)
    probe = Probe(
        config=loaded.config,
        config_path=config_path,
        root=Path(args.root),
        osv_url=None if args.offline else args.osv_url,
        scan_paths=[Path(p) for p in args.scan],
        scan_history=args.history,
        scan_git=args.git_history,
        env_files=env_files_near(config_path),
    )
    results = run_checks(probe)
    if args.json:
        report = {
            "checks": [r.as_json() for r in results],
            "summary": summary_counts(results),
        }
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_text(results))
    return 1 if any(r.status == "fail" for r in results) else 0
