"""Draws the semantic cache's curves as a standalone SVG (no plotting library needed).

Called by benches/cache_calibrate.py with `--svg PATH`: two panels over the held-out split,
precision against recall, and the false-hit rate on non-duplicates against the correct-hit
rate on duplicates, for each decision swept over its threshold, with the shipped defaults
marked.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

Curve = list[tuple[float, float]]

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
W, H = 380, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 34, 46


def _panel(
    x0: float,
    title: str,
    xlabel: str,
    ylabel: str,
    xmax: float,
    ymax: float,
    curves: dict[str, Curve],
    points: dict[str, tuple[float, float]],
) -> list[str]:
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return x0 + LEFT + pw * min(v, xmax) / xmax

    def sy(v: float) -> float:
        return TOP + ph * (1 - min(v, ymax) / ymax)

    out = [
        f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{x0 + LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>',
    ]
    for i in range(6):
        xv, yv = xmax * i / 5, ymax * i / 5
        out.append(
            f'<text x="{sx(xv):.1f}" y="{TOP + ph + 16}" text-anchor="middle" '
            f'font-size="11">{xv:.0%}</text>'
        )
        out.append(
            f'<text x="{x0 + LEFT - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" '
            f'font-size="11">{yv:.0%}</text>'
        )
        out.append(
            f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + pw}" y1="{sy(yv):.1f}" '
            f'y2="{sy(yv):.1f}" stroke="#eee"/>'
        )
    out.append(
        f'<text x="{x0 + LEFT + pw / 2}" y="{H - 10}" text-anchor="middle" '
        f'font-size="12">{escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate({x0 + 14},{TOP + ph / 2}) rotate(-90)" '
        f'text-anchor="middle" font-size="12">{escape(ylabel)}</text>'
    )
    for colour, (_, curve) in zip(COLOURS, curves.items(), strict=False):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(curve))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for shape, (_, (x, y)) in enumerate(points.items()):
        if shape == 0:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="none" '
                'stroke="black" stroke-width="2"/>'
            )
        else:
            out.append(
                f'<rect x="{sx(x) - 5:.1f}" y="{sy(y) - 5:.1f}" width="10" height="10" '
                'fill="black"/>'
            )
    return out


def write(
    path: Path,
    precision_recall: dict[str, Curve],
    false_correct: dict[str, Curve],
    pr_points: dict[str, tuple[float, float]],
    fc_points: dict[str, tuple[float, float]],
    caption: str,
) -> None:
    legend_h = 18 * (len(precision_recall) + len(pr_points)) + 30
    height = H + legend_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{height}" '
        f'viewBox="0 0 {2 * W} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{2 * W}" height="{height}" fill="white"/>',
    ]
    out += _panel(
        0, "Precision / recall", "recall (correct hits on duplicates)",
        "precision (correct / all hits)", 0.5, 1.0, precision_recall, pr_points,
    )  # fmt: skip
    out += _panel(
        W, "False hits / correct hits", "false hits on non-duplicates",
        "correct hits on duplicates", 0.1, 0.5, false_correct, fc_points,
    )  # fmt: skip
    y = H + 8
    for colour, name in zip(COLOURS, precision_recall, strict=False):
        out.append(f'<line x1="20" x2="44" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="52" y="{y + 4}">{escape(name)}</text>')
        y += 18
    for shape, name in enumerate(pr_points):
        marker = (
            f'<circle cx="32" cy="{y}" r="5" fill="none" stroke="black" stroke-width="2"/>'
            if shape == 0
            else f'<rect x="27" y="{y - 5}" width="10" height="10" fill="black"/>'
        )
        out.append(marker)
        out.append(f'<text x="52" y="{y + 4}">{escape(name)}</text>')
        y += 18
    out.append(f'<text x="20" y="{y + 8}" font-size="11" fill="#555">{escape(caption)}</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
