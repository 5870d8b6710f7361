"""Renders the gateway throughput plot (an SVG, no plotting library) from the JSON that
`benches/test_gateway.py` writes through pytest-benchmark:

    python -m pytest benches/test_gateway.py --benchmark-only --benchmark-json=gateway.json
    python benches/plot_gateway.py gateway.json -o docs/images/throughput.svg

One group of bars per throughput benchmark: hybridfast, the bare aiohttp pass-through proxy,
and LiteLLM's proxy when the run measured it (`litellm_rps` in the benchmark's extra_info),
all from the same run.
"""

from __future__ import annotations

import argparse
import json
from html import escape
from pathlib import Path
from typing import Any

GROUPS = [
    ("test_gateway_throughput_16", "16 concurrent"),
    ("test_gateway_stream_throughput_16", "16 concurrent streams"),
    ("test_gateway_throughput_64", "64 concurrent"),
    ("test_gateway_stream_throughput_64", "64 concurrent streams"),
]
SERIES = [
    ("gateway_rps", "hybridfast", "#1f6feb"),
    ("bare_rps", "bare aiohttp proxy (parses nothing)", "#8b949e"),
    ("litellm_rps", "LiteLLM proxy", "#d29922"),
]
WIDTH, LEFT, RIGHT, BAR, GAP, TOP = 760, 170, 90, 16, 18, 64


def _bars(results: dict[str, Any]) -> list[tuple[str, list[tuple[str, str, float]]]]:
    by_name = {b["name"]: b.get("extra_info", {}) for b in results["benchmarks"]}
    groups = []
    for bench, label in GROUPS:
        info = by_name.get(bench)
        if info is None:
            continue
        bars = [(name, color, float(info[key])) for key, name, color in SERIES if key in info]
        if bars:
            groups.append((label, bars))
    if not groups:
        raise SystemExit("no throughput benchmark in this file: run benches/test_gateway.py")
    return groups


def render(results: dict[str, Any]) -> str:
    groups = _bars(results)
    present = [s for s in SERIES if any(s[1] == b[0] for _, bars in groups for b in bars)]
    top = max(v for _, bars in groups for _, _, v in bars)
    scale = (WIDTH - LEFT - RIGHT) / top
    height = TOP + sum(len(b) * BAR + GAP for _, b in groups) + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="16" y="24" font-size="15" font-weight="bold">'
        "Requests per second through one gateway process (higher is better)</text>",
    ]
    x = 16
    for _, name, color in present:
        out.append(f'<rect x="{x}" y="36" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{x + 16}" y="46">{escape(name)}</text>')
        x += 28 + 7 * len(name)
    y = TOP
    for label, bars in groups:
        mid = y + len(bars) * BAR / 2 + 4
        out.append(f'<text x="{LEFT - 8}" y="{mid:.0f}" text-anchor="end">{escape(label)}</text>')
        for _, color, value in bars:
            w = max(1.0, value * scale)
            out.append(
                f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR - 3}" fill="{color}"/>'
            )
            out.append(f'<text x="{LEFT + w + 6:.1f}" y="{y + BAR - 5}">{value:,.0f}</text>')
            y += BAR
        y += GAP
    machine = results.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "")
    cores = machine.get("cpu", {}).get("count", "")
    when = str(results.get("datetime", ""))[:10]
    notes = [
        f"Measured {when} on {cpu} ({cores} cores, shared), all servers in the same run, "
        "zero-latency fake upstream;",
        "python -m pytest benches/test_gateway.py --benchmark-only --benchmark-json=FILE, "
        "then python benches/plot_gateway.py FILE",
    ]
    for i, note in enumerate(notes):
        out.append(
            f'<text x="16" y="{y + 14 + 16 * i}" font-size="11" fill="#57606a">'
            f"{escape(note)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", type=Path, help="pytest-benchmark JSON of benches/test_gateway.py"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/throughput.svg"))
    args = parser.parse_args()
    args.output.write_text(render(json.loads(args.results.read_text())))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
