"""The calibration that sets the verifier's error-bound table (benches/cache_calibrate.py):
a bound holds on each corpus of the calibration split, not only on the mix of them."""

from __future__ import annotations

import numpy as np
from benches import cache_calibrate as cal
from benches.cache_paradata import asked_once

from hybridfast.cache import verifier as V

# p = sigmoid(10 * cosine - 9): cosine 0.99 -> 0.71, 0.95 -> 0.62, 0.81 -> 0.31.
MODEL = V.Model(
    weights=(10.0,) + (0.0,) * (len(V.FEATURES) - 1), bias=-9.0, thresholds=(), floor=0.8
)


def _split(rows: list[tuple[str, bool, float]]) -> cal.Split:
    """One lookup per row (corpus, duplicate, cosine of its only candidate, its own text)."""
    a = [f"how do I set up tool number {i}" for i in range(len(rows))]
    b = [f"how would I set up tool number {i}" for i in range(len(rows))]
    dup = np.array([d for _, d, _ in rows])
    return cal.Split(
        a=a,
        b=b,
        duplicate=dup,
        candidates=[[(i, cos)] for i, (_, _, cos) in enumerate(rows)],
        stored=a,
        own=np.arange(len(rows)),
        links={frozenset((x, y)) for x, y, d in zip(a, b, dup, strict=True) if d},
        part=np.array([p for p, _, _ in rows]),
    )


def test_a_bound_that_holds_on_the_mix_but_not_on_one_corpus_is_not_taken() -> None:
    rows = [("news", True, 0.99)] * 600 + [("news", False, 0.81)] * 600
    # A smaller corpus whose near misses score high: 6 of its 156 non-duplicates (3.8%)
    # would be served below p = 0.62, which is 0.8% of the mix's non-duplicates.
    rows += [("questions", False, 0.95)] * 6 + [("questions", False, 0.81)] * 150
    split = _split(rows)
    (bound, threshold), *_ = cal.table(split, MODEL)[2:]
    assert bound == 0.02
    out = cal.outcomes(split, MODEL.floor, cal.verifier_accept(MODEL, threshold))
    assert cal.rates(split, out, "questions")[2] == 0.0
    assert threshold > 0.62  # the mix alone would have allowed down to 0.32
    served = cal.outcomes(split, MODEL.floor, cal.verifier_accept(MODEL, 0.5))
    assert cal.upper(cal.rates(split, served)[2], 756) <= 0.02  # the mix alone allows it


def test_a_corpus_too_small_to_show_a_bound_does_not_veto_it() -> None:
    rows = [("news", True, 0.99)] * 600 + [("news", False, 0.81)] * 600
    # 40 duplicates: even with no error, a 95% upper bound over 40 is above 2%.
    rows += [("tiny", True, 0.95)] * 40
    table = dict(cal.table(_split(rows), MODEL))
    assert table[0.02] < 0.62


def test_each_text_is_asked_once_per_split() -> None:
    """A text asked in several pairs (STS grades student answers against a dozen references)
    keeps its first pair only, so no one text weighs tens of times in the fit and the rates."""
    pairs = [
        {"a": "reference one", "b": "the same answer", "duplicate": False, "source": "sts"},
        {"a": "reference two", "b": "the same answer ", "duplicate": True, "source": "sts"},
        {"a": "reference one", "b": "another answer", "duplicate": True, "source": "sts"},
    ]
    assert asked_once(pairs) == [pairs[0], pairs[2]]
