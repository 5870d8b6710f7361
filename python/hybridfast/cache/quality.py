"""How well a semantic-cache setting separates paraphrases from near-misses.

The protocol (also `python -m hybridfast cache eval`): every `stored` text goes into one
scope of a fresh index; each `paraphrase` is looked up and should get its own entry back;
each `near_miss` (a changed number, a negation, another entity, a flipped detail) should get
nothing. The false-hit rate counts near-misses that were served an answer plus paraphrases
served someone else's, over the near-miss lookups (the strict reading: every wrong answer
counts against the lookups that must miss).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from hybridfast._core import VectorIndex
from hybridfast.cache import guards as guard_mod


class TextEmbedder(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class Triple:
    id: int
    stored: str
    paraphrase: str
    near_miss: str
    kind: str


@dataclass
class Scores:
    threshold: float
    guards: tuple[str, ...]
    hit_rate: float
    false_hit_rate: float
    paraphrases: int
    near_misses: int
    false_by_kind: dict[str, int] = field(default_factory=dict)
    vetoed_by_guard: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "guards": list(self.guards),
            "hit_rate": round(self.hit_rate, 4),
            "false_hit_rate": round(self.false_hit_rate, 4),
            "paraphrases": self.paraphrases,
            "near_misses": self.near_misses,
            "false_by_kind": self.false_by_kind,
            "vetoed_by_guard": self.vetoed_by_guard,
        }


def load_triples(path: str | Path) -> list[Triple]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(Triple(d["id"], d["stored"], d["paraphrase"], d["near_miss"], d["kind"]))
    return out


@dataclass
class Prepared:
    """Embeddings and candidate lists computed once, so thresholds and guards can be swept."""

    triples: list[Triple]
    # For each lookup: [(entry position, cosine)] best first.
    para_candidates: list[list[tuple[int, float]]]
    near_candidates: list[list[tuple[int, float]]]


def prepare(embedder: TextEmbedder, triples: Sequence[Triple], k: int = 5) -> Prepared:
    index = VectorIndex(embedder.dimensions)
    stored = embedder.embed([t.stored for t in triples])
    index.add(0, np.arange(len(triples), dtype=np.int64), stored)

    def candidates(texts: list[str]) -> list[list[tuple[int, float]]]:
        ids, scores = index.search(0, embedder.embed(texts), k=k, exact=True)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    return Prepared(
        list(triples),
        candidates([t.paraphrase for t in triples]),
        candidates([t.near_miss for t in triples]),
    )


def score(
    prepared: Prepared,
    threshold: float,
    guards: Iterable[str] = guard_mod.GUARDS,
    subset: Sequence[int] | None = None,
) -> Scores:
    guards = tuple(guards)
    triples = prepared.triples
    rows = range(len(triples)) if subset is None else subset
    vetoed: dict[str, int] = {}

    def served(query: str, cands: list[tuple[int, float]]) -> int | None:
        for pos, sim in cands:
            if sim < threshold:
                return None
            verdict = guard_mod.check(query, triples[pos].stored, guards)
            if verdict.ok:
                return pos
            assert verdict.guard is not None
            vetoed[verdict.guard] = vetoed.get(verdict.guard, 0) + 1
        return None

    good = wrong = 0
    false_by_kind: dict[str, int] = {}
    for r in rows:
        t = triples[r]
        got = served(t.paraphrase, prepared.para_candidates[r])
        if got == r:
            good += 1
        elif got is not None:
            wrong += 1
            false_by_kind["wrong-entry"] = false_by_kind.get("wrong-entry", 0) + 1
        if served(t.near_miss, prepared.near_candidates[r]) is not None:
            wrong += 1
            false_by_kind[t.kind] = false_by_kind.get(t.kind, 0) + 1
    n = len(rows)
    return Scores(threshold, guards, good / n, wrong / n, n, n, false_by_kind, vetoed)


def choose_threshold(
    prepared: Prepared,
    guards: Iterable[str],
    subset: Sequence[int],
    max_false_hit_rate: float = 0.01,
) -> float:
    """The lowest threshold (most hits) whose false-hit rate on `subset` stays within the
    target, searched on a 0.01 grid."""
    guards = tuple(guards)
    best = 1.0
    for t in np.arange(0.99, 0.30, -0.01):
        t = round(float(t), 2)
        if score(prepared, t, guards, subset).false_hit_rate <= max_false_hit_rate:
            best = t
        else:
            break
    return best
