"""Finds API keys left in files: known key prefixes (the guardrails' key shapes) anywhere, and
high-entropy values assigned to names that say key, token, secret or password. Findings
name the file, the line and the kind; the value is never shown (only its first characters
and length)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hybridfast.security.guardrails import KEY_SHAPES

SKIP_DIRS = frozenset(
    {".git", ".venv", "venv", "node_modules", "target", "__pycache__", ".mypy_cache", ".tox"}
)
MAX_BYTES = 1_000_000
MIN_ENTROPY = 3.5  # bits per character; English text is near 2, random base64 near 6
_ASSIGNMENT = re.compile(
    r"""(?i)\b([A-Za-z0-9_]*(?:key|token|secret|passw(?:or)?d)[A-Za-z0-9_]*)\s*[:=]\s*["']?([A-Za-z0-9_\-+/=.]{20,})"""
)
# Values that look like references, not secrets.
_REFERENCE = re.compile(r"^\$\{|^\$[A-Z_]|^<|keyring:")


@dataclass(frozen=True)
class KeyFinding:
    where: str  # file:line (or commit:file for git history)
    kind: str
    preview: str  # the first characters and the length, never the value

    def line(self) -> str:
        return f"{self.where}: {self.kind} {self.preview}"


def entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _preview(value: str) -> str:
    shown = 6 if value.startswith(("sk-", "gh", "xox", "AKIA", "AIza", "gsk_", "xai-")) else 2
    return f"{value[:shown]}… ({len(value)} chars)"


def scan_text(text: str, where: str) -> list[KeyFinding]:
    found: list[KeyFinding] = []
    for number, line in enumerate(text.splitlines(), 1):
        spans: list[tuple[int, int]] = []
        for m in KEY_SHAPES.finditer(line):
            found.append(KeyFinding(f"{where}:{number}", "known key prefix", _preview(m.group(0))))
            spans.append(m.span())
        for m in _ASSIGNMENT.finditer(line):
            value = m.group(2)
            start = m.start(2)
            if any(a <= start < b for a, b in spans) or _REFERENCE.search(value):
                continue
            if entropy(value) >= MIN_ENTROPY:
                found.append(
                    KeyFinding(f"{where}:{number}", f"high-entropy {m.group(1)}", _preview(value))
                )
    return found


def files_under(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
            continue
        if not path.is_dir():
            continue
        for child in sorted(path.iterdir()):
            if child.is_dir() and (child.name in SKIP_DIRS or child.is_symlink()):
                continue
            yield from files_under([child])


def scan_files(paths: Iterable[Path]) -> tuple[int, list[KeyFinding]]:
    """(files read, findings); binary and large files are skipped."""
    count = 0
    found: list[KeyFinding] = []
    for path in files_under(paths):
        try:
            if path.stat().st_size > MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data[:4096]:
            continue
        count += 1
        found += scan_text(data.decode(errors="replace"), str(path))
    return count, found
