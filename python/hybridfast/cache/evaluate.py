"""What `hybridfast cache eval` measures: how often a semantic-cache setting serves the right
answer, someone else's answer, or an answer where it must miss, on labelled question pairs.

The protocol: the first text of every pair is stored in one scope of a `SemanticIndex` built
exactly as `serve` builds it (same embedder, threshold, guards and verifier); then the second
text of every pair is looked up through the same `search` call `serve` makes.

- a duplicate pair is a *correct hit* when its own first text comes back, a *wrong answer*
  when another entry comes back;
- a non-duplicate pair is a *false hit* when anything comes back.

An entry that is the query itself (same text, ignoring case) or that the file labels a
duplicate of it in some other pair is a right answer wherever it comes back: a correct hit
for a duplicate pair, nothing counted for a non-duplicate one.

Rates are over the duplicate pairs (correct, wrong) and over the non-duplicate pairs (false).

Pairs files: JSONL, one `{"a": ..., "b": ..., "duplicate": true|false}` a line; or TSV, one
`a<TAB>b<TAB>label` a line (label 1/0, true/false, yes/no; a first line naming the columns is
skipped). The project's own triples (`{"stored", "paraphrase", "near_miss"}`) are read as two
pairs each: stored/paraphrase (duplicate) and stored/near_miss (not).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridfast.cache.semantic import Payload, SemanticIndex
from hybridfast.errors import InvalidRequest
from hybridfast.types import ChatAnswer

_TRUE = frozenset({"1", "true", "yes", "y", "duplicate"})
_FALSE = frozenset({"0", "false", "no", "n", "different"})
_BATCH = 256
_FOREVER = float("inf")


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    duplicate: bool


@dataclass
class PairScores:
    pairs: int
    duplicates: int
    non_duplicates: int
    correct: int
    wrong: int
    false: int

    def rate(self, count: int, total: int) -> float:
        return count / total if total else 0.0

    @property
    def correct_rate(self) -> float:
        return self.rate(self.correct, self.duplicates)

    @property
    def wrong_rate(self) -> float:
        return self.rate(self.wrong, self.duplicates)

    @property
    def false_rate(self) -> float:
        return self.rate(self.false, self.non_duplicates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "duplicates": self.duplicates,
            "non_duplicates": self.non_duplicates,
            "correct_hits": self.correct,
            "wrong_answers": self.wrong,
            "false_hits": self.false,
            "correct_hit_rate": round(self.correct_rate, 4),
            "wrong_answer_rate": round(self.wrong_rate, 4),
            "false_hit_rate": round(self.false_rate, 4),
        }


def load_pairs(path: str | Path) -> list[Pair]:
    """Reads a pairs file (JSONL or TSV, see the module docstring); a bad line is an
    `InvalidRequest` naming the file and line, never a traceback."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"cannot read {path}: {exc}", hint="pass a JSONL or TSV file of labelled pairs"
        ) from None
    pairs: list[Pair] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.extend(_parse_line(line, number))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(
                f"{path}:{number}: not a labelled pair ({exc})",
                hint='JSONL {"a": ..., "b": ..., "duplicate": true} or TSV a<TAB>b<TAB>1',
            ) from None
    if not pairs:
        raise InvalidRequest(f"{path} holds no pairs", hint="pass a file of labelled pairs")
    return pairs


def _parse_line(line: str, number: int) -> list[Pair]:
    if line.lstrip().startswith("{"):
        d = json.loads(line)
        if not isinstance(d, dict):
            raise TypeError("a JSON object is expected")
        if "stored" in d:
            stored = _text(d["stored"])
            return [
                Pair(stored, _text(d["paraphrase"]), True),
                Pair(stored, _text(d["near_miss"]), False),
            ]
        duplicate = d["duplicate"]
        if not isinstance(duplicate, bool):
            raise TypeError("`duplicate` must be true or false")
        return [Pair(_text(d["a"]), _text(d["b"]), duplicate)]
    parts = line.split("\t")
    if len(parts) != 3:
        raise ValueError("a TSV line has three columns: a, b, label")
    label = parts[2].strip().lower()
    if label not in _TRUE | _FALSE:
        if number == 1:
            return []  # a header
        raise ValueError(f"label {parts[2]!r} is not 1/0, true/false or yes/no")
    return [Pair(_text(parts[0]), _text(parts[1]), label in _TRUE)]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError("texts must be non-empty strings")
    return value


def evaluate(index: SemanticIndex, pairs: Sequence[Pair], scope: int = 0) -> PairScores:
    """Stores every pair's first text in `index` (which should be empty) and looks up every
    second text through `SemanticIndex.search`, the call `serve` makes."""
    position = _store_all(index, list(dict.fromkeys(p.a for p in pairs)), scope)
    links = {frozenset((p.a, p.b)) for p in pairs if p.duplicate}
    correct = wrong = false = 0
    for start in range(0, len(pairs), _BATCH):
        batch = pairs[start : start + _BATCH]
        vectors = index.embed_many([p.b for p in batch])
        for pair, vector in zip(batch, vectors, strict=True):
            found = index.search(scope, pair.b, np.asarray(vector))
            if found is None:
                continue
            text = found.payload.text
            right = (
                (pair.duplicate and found.id == position[pair.a])
                or text.strip().casefold() == pair.b.strip().casefold()
                or frozenset((text, pair.b)) in links
            )
            if right:
                correct += int(pair.duplicate)
            elif not pair.duplicate:
                false += 1
            else:
                wrong += 1
    duplicates = sum(1 for p in pairs if p.duplicate)
    return PairScores(len(pairs), duplicates, len(pairs) - duplicates, correct, wrong, false)


def _store_all(index: SemanticIndex, texts: list[str], scope: int) -> dict[str, int]:
    """Adds each text as an entry whose answer is the text itself; returns text → entry id."""
    ids: dict[str, int] = {}
    for start in range(0, len(texts), _BATCH):
        chunk = texts[start : start + _BATCH]
        vectors = index.embed_many(chunk)
        for text, vector in zip(chunk, vectors, strict=True):
            ids[text] = len(ids) + 1
            payload = Payload(text, "eval", "eval", scope, ChatAnswer(content=text))
            index.add(ids[text], np.asarray(vector), payload, 0, _FOREVER)
    return ids
