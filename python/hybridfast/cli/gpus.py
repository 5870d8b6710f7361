"""`hybridfast gpus`: the GPUs NVML sees, their health and load, and the servers pinned to each."""

from __future__ import annotations

import argparse
import json
import sys

from hybridfast.config import load_config
from hybridfast.gpus import GpuPool, load_nvml


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gpus", help="list the GPUs (NVML): health, load, pinned servers")
    p.add_argument("--config", help="YAML config (for `gpus:`: pinned servers, limits)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    gpus = load_config(args.config).config.gpus
    pool = GpuPool(load_nvml(), gpus.affinity(), max_temperature_c=gpus.max_temperature_c)
    pool.refresh()
    pinned: dict[int, list[str]] = {}
    for provider, index in pool.affinity.items():
        pinned.setdefault(index, []).append(provider)
    rows = [{**g, "providers": pinned.get(g["index"], [])} for g in pool.summary()]
    if args.json:
        print(json.dumps({"nvml": pool.nvml is not None, "gpus": rows}, indent=2))
        return 0
    if pool.nvml is None:
        print("no NVML: install the gpu extra (nvidia-ml-py) on a machine with an NVIDIA driver")
        return 0
    if not rows:
        print("NVML sees no GPU")
        return 0
    print(f"{'gpu':>3}  {'name':<22} {'state':<6} {'util':>5} {'memory':>17} {'temp':>5}  servers")
    for r in rows:
        memory = f"{r['memory_used'] / 2**30:.1f}/{r['memory_total'] / 2**30:.1f} GiB"
        state = "up" if r["healthy"] else "DOWN"
        print(
            f"{r['index']:>3}  {r['name'][:22]:<22} {state:<6} {r['utilization']:>5.0%} "
            f"{memory:>17} {r['temperature_c']:>3} C  {', '.join(r['providers']) or '-'}"
        )
        if r["problem"]:
            print(f"     {r['problem']}", file=sys.stderr)
    return 0
