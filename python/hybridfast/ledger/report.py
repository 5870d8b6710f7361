"""Spend reports: what `ledger report` prints and `GET /admin/spend` answers.

Both read the native books' hourly aggregates (rebuilt from the store for the CLI, live in
the server), so a report over a million entries is a scan over a few thousand hourly cells.
Money is shown as exact decimal dollars (`cost_usd`) and integer picodollars.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

from hybridfast import _core
from hybridfast._core import format_usd
from hybridfast.errors import InvalidRequest

DIMENSIONS = ("model", "key", "user", "team", "deployment", "provider", "route")
PERIODS = ("hour", "day", "month")
BY = (*DIMENSIONS, *PERIODS, "total")

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}

FIELDS = (
    "group",
    "period_start",
    "requests",
    "errors",
    "estimated",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "saved_usd",
    "cost_picodollars",
    "saved_picodollars",
)


def parse_time(text: str | None, *, now_ms: int | None = None) -> int | None:
    """`2025-11-01`, `2025-11-01T10:00` (UTC unless an offset is given), `24h`/`7d`/`30m`/`2w`
    ago, or Unix seconds; None stays None."""
    if text is None or text == "":
        return None
    text = text.strip()
    now = now_ms if now_ms is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    match = _RELATIVE.match(text)
    if match:
        return now - int(match.group(1)) * _UNIT_MS[match.group(2)]
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return int(float(text) * 1000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"not a time: {text!r}",
            hint="use a date (2025-11-01), a datetime (2025-11-01T10:00), or 24h / 7d ago",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(
    books: _core.Ledger, by: str = "model", since_ms: int | None = None, until_ms: int | None = None
) -> list[dict[str, Any]]:
    """The report as dicts with the keys of `FIELDS`."""
    if by not in BY:
        raise InvalidRequest(f"`by` must be one of {', '.join(BY)}")
    dim, period = (by, None) if by in DIMENSIONS or by == "total" else ("total", by)
    out = []
    for r in books.report(dim, period, since_ms, until_ms):
        group, start, req, err, est, hits, inp, outp, cached, write, reason, cost, saved = r
        out.append(
            {
                "group": group,
                "period_start": iso(start),
                "requests": req,
                "errors": err,
                "estimated": est,
                "cache_hits": hits,
                "input_tokens": inp,
                "output_tokens": outp,
                "cached_input_tokens": cached,
                "cache_write_tokens": write,
                "reasoning_tokens": reason,
                "cost_usd": format_usd(cost),
                "saved_usd": format_usd(saved),
                "cost_picodollars": cost,
                "saved_picodollars": saved,
            }
        )
    return out


def to_csv(records: list[dict[str, Any]], fields: tuple[str, ...] = FIELDS) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def to_table(records: list[dict[str, Any]], by: str) -> str:
    """A plain-text table for people."""
    label = "period" if by in PERIODS else by
    header = (label, "requests", "errors", "input", "output", "cached", "cost (USD)")
    lines = [header]
    total = 0
    for r in records:
        name = r["period_start"] if by in PERIODS else r["group"]
        lines.append(
            (
                str(name if name is not None else "-"),
                str(r["requests"]),
                str(r["errors"]),
                str(r["input_tokens"]),
                str(r["output_tokens"]),
                str(r["cached_input_tokens"]),
                r["cost_usd"],
            )
        )
        total += int(r["cost_picodollars"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    # Entries without a team/key/user are in no row of those reports: no total to show.
    if by not in ("total", "team", "key", "user"):
        text.append(f"total: ${format_usd(total)}")
    return "\n".join(text)
