"""Guardrails: checks on the text of requests (and optionally answers) that warn, block or mask.

Built in:
- `pii`: emails, phone numbers, payment card numbers (13-19 digits passing the Luhn check),
  IBANs (passing the ISO 7064 mod-97 check) and key-shaped strings (OpenAI, Anthropic,
  AWS, Google, GitHub, Slack, hybridfast keys). `mask` replaces each with `[EMAIL]`,
  `[PHONE]`, `[CARD]`, `[IBAN]` or `[KEY]` before the upstream sees it.
- `prompt_injection`: heuristics for the common phrasings ("ignore previous instructions",
  "reveal your system prompt", role-play jailbreaks, smuggled chat-template tokens). A
  heuristic, not a classifier: it catches the copy-pasted attacks, not a determined one.

Custom guardrails implement `Guardrail` (a `name` and `find(text) -> list[Finding]`) and are
named in config by a `hybridfast.guardrails` entry point or a `module:Class` path; their
`options` are passed to the constructor.

What fired goes into the `x-hybridfast-guardrails` header (`name:action(kinds)`, joined by
`; `), a log line (the kinds, never the text), and `hybridfast_guardrail_triggered_total`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from hybridfast.config import GuardrailConfig
from hybridfast.errors import ConfigError
from hybridfast.metrics import Counter

TRIGGERED = Counter(
    "hybridfast_guardrail_triggered",
    "Guardrails that found something, by guardrail, action and where (request or answer).",
    ["guardrail", "action", "where"],
)
ENTRY_POINT_GROUP = "hybridfast.guardrails"


@dataclass(frozen=True, slots=True)
class Finding:
    """What a guardrail found: its kind (`email`, `injection`, ...) and the span in the text."""

    kind: str
    start: int
    end: int


@runtime_checkable
class Guardrail(Protocol):
    name: str

    def find(self, text: str) -> list[Finding]: ...


# --- PII -----------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])"
)
KEY_SHAPES = re.compile(
    r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?|hf-)?[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_\-]{35}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|gsk_[A-Za-z0-9]{20,}|xai-[A-Za-z0-9]{20,})"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _spans(pattern: re.Pattern[str], text: str, kind: str, check: Any = None) -> list[Finding]:
    return [
        Finding(kind, m.start(), m.end())
        for m in pattern.finditer(text)
        if check is None or check(m.group(0))
    ]


def _card_check(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


_DATE = re.compile(r"^(?:\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})$")


def _phone_check(raw: str) -> bool:
    """7-15 digits (E.164); without a `+` country code at least 9, and never a date."""
    digits = re.sub(r"\D", "", raw)
    if _DATE.match(raw):
        return False
    return 7 <= len(digits) <= 15 if raw.startswith("+") else 9 <= len(digits) <= 15


class PiiGuardrail:
    """Emails, phone numbers, card numbers, IBANs and key-shaped strings."""

    _ORDER = ("key", "email", "iban", "card", "phone")  # earlier kinds win overlaps

    def __init__(self, name: str = "pii", entities: Sequence[str] = _ORDER) -> None:
        self.name = name
        self.entities = [e for e in self._ORDER if e in entities]

    def find(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for kind in self.entities:
            if kind == "key":
                spans = _spans(KEY_SHAPES, text, kind)
            elif kind == "email":
                spans = _spans(_EMAIL, text, kind)
            elif kind == "iban":
                spans = _spans(_IBAN, text, kind, iban_ok)
            elif kind == "card":
                spans = _spans(_CARD, text, kind, _card_check)
            else:
                spans = _spans(_PHONE, text, kind, _phone_check)
            found += [s for s in spans if not any(_overlap(s, f) for f in found)]
        return sorted(found, key=lambda f: f.start)


def _overlap(a: Finding, b: Finding) -> bool:
    return a.start < b.end and b.start < a.end


# --- prompt injection ----------------------------------------------------------------------

_INJECTION = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier"
        r"|all|your|the)\b[^.\n]{0,20}\b(?:instructions?|prompts?|rules|directions|guidelines)",
        r"\b(?:reveal|print|show|repeat|output|leak)\b[^.\n]{0,30}\b(?:system|hidden|initial)"
        r"\s+(?:prompt|instructions?|message)",
        r"\byou\s+are\s+now\b[^.\n]{0,40}\b(?:DAN|unrestricted|jailbroken|developer\s+mode|evil)",
        r"\b(?:pretend|act\s+as\s+if)\b[^.\n]{0,40}\b(?:no|without)\s+(?:rules|restrictions"
        r"|limits|filters|guidelines)",
        r"\bdo\s+anything\s+now\b|\bjailbreak(?:ing)?\b|\bdeveloper\s+mode\s+enabled\b",
        r"<\|im_start\|>\s*system|<\|system\|>|\[/?INST\]|<<SYS>>|###\s*system\s*:",
        r"\bnew\s+instructions?\s*:|\bsystem\s+override\b",
    )
]


class PromptInjectionGuardrail:
    """Phrasings of known injection and jailbreak attempts."""

    def __init__(self, name: str = "prompt_injection") -> None:
        self.name = name

    def find(self, text: str) -> list[Finding]:
        found = []
        for pattern in _INJECTION:
            m = pattern.search(text)
            if m is not None:
                found.append(Finding("injection", m.start(), m.end()))
        return found


# --- building from config ------------------------------------------------------------------


def load_plugin(spec: str) -> Any:
    """A `hybridfast.guardrails` entry point by name, or a `module:Class` path."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            return ep.load()
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(
            f"guardrail plugin {spec!r}: no {ENTRY_POINT_GROUP} entry point of that name",
            hint="name an installed entry point or give a module:Class path",
        )
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"guardrail plugin {spec!r} cannot be loaded: {exc}") from None


def build(config: GuardrailConfig) -> Guardrail:
    if config.kind == "pii":
        return PiiGuardrail(config.name, config.entities)
    if config.kind == "prompt_injection":
        return PromptInjectionGuardrail(config.name)
    factory = load_plugin(config.plugin or "")
    guardrail = factory(**config.options)
    if not isinstance(guardrail, Guardrail):
        raise ConfigError(
            f"guardrail plugin {config.plugin!r} has no `name` and `find(text)`",
            hint="see docs/security-governance.md, Guardrails",
        )
    guardrail.name = config.name
    return guardrail


def mask(text: str, findings: Sequence[Finding]) -> str:
    """Replaces each finding's span with `[KIND]` (findings must not overlap)."""
    out = []
    last = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < last:
            continue
        out.append(text[last : f.start])
        out.append(f"[{f.kind.upper()}]")
        last = f.end
    out.append(text[last:])
    return "".join(out)
