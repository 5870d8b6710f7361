"""The semantic cache's defaults, checked against the paraphrase set they were chosen on
(tests/data/cache_paraphrases.jsonl: 110 stored questions, each with a true paraphrase and
a near-miss that must not be served)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridfast._core import HashingEmbedder
from hybridfast.cache import quality
from hybridfast.cache.guards import GUARDS
from hybridfast.cache.semantic import DEFAULT_THRESHOLDS

DATA = Path(__file__).resolve().parents[1] / "data"
SET = DATA / "cache_paraphrases.jsonl"
# Written after the guards were developed on SET, and never tuned on.
HELDOUT = DATA / "cache_paraphrases_heldout.jsonl"


@pytest.fixture(scope="module")
def triples() -> list[quality.Triple]:
    return quality.load_triples(SET)


@pytest.fixture(scope="module")
def hashing(triples: list[quality.Triple]) -> quality.Prepared:
    return quality.prepare(HashingEmbedder(384), triples)


def _minilm() -> quality.TextEmbedder:
    try:
        from hybridfast.embeddings.local import load_embedder

        return load_embedder("minilm")
    except Exception as exc:  # the weights are an optional extra
        pytest.skip(f"minilm not available: {exc}")


@pytest.fixture(scope="module")
def minilm(triples: list[quality.Triple]) -> quality.Prepared:
    return quality.prepare(_minilm(), triples)


@pytest.fixture(scope="module")
def minilm_heldout() -> quality.Prepared:
    return quality.prepare(_minilm(), quality.load_triples(HELDOUT))


def test_the_set_is_balanced(triples: list[quality.Triple]) -> None:
    kinds = {t.kind for t in triples}
    assert kinds == {"numbers", "negation", "entity", "detail"}
    assert len(triples) >= 100
    assert all(t.stored != t.paraphrase != t.near_miss for t in triples)


def test_minilm_default_meets_the_false_hit_target(minilm: quality.Prepared) -> None:
    s = quality.score(minilm, DEFAULT_THRESHOLDS["minilm"])
    assert s.false_hit_rate <= 0.02, s.as_dict()
    assert s.hit_rate >= 0.6, s.as_dict()


def test_minilm_default_holds_on_the_heldout_set(minilm_heldout: quality.Prepared) -> None:
    s = quality.score(minilm_heldout, DEFAULT_THRESHOLDS["minilm"])
    assert s.false_hit_rate <= 0.02, s.as_dict()
    assert s.hit_rate >= 0.6, s.as_dict()
    # Without the guards the same threshold serves wrong answers.
    assert quality.score(minilm_heldout, DEFAULT_THRESHOLDS["minilm"], ()).false_hit_rate > 0.05


def test_guards_buy_what_the_threshold_cannot(minilm: quality.Prepared) -> None:
    t = DEFAULT_THRESHOLDS["minilm"]
    unguarded = quality.score(minilm, t, ())
    guarded = quality.score(minilm, t, GUARDS)
    assert unguarded.false_hit_rate > 5 * guarded.false_hit_rate
    # And no single static threshold without guards reaches the target with useful hits.
    for threshold in (0.8, 0.85, 0.9, 0.95):
        s = quality.score(minilm, threshold, ())
        assert s.false_hit_rate > 0.02 or s.hit_rate < 0.3, s.as_dict()


def test_hashing_cannot_meet_the_target_with_useful_hits(hashing: quality.Prepared) -> None:
    """Why semantic matching is off by default without a neural embedder."""
    for threshold in [x / 100 for x in range(50, 100)]:
        s = quality.score(hashing, threshold, GUARDS)
        assert s.false_hit_rate > 0.02 or s.hit_rate < 0.3, s.as_dict()
    # Its explicit-opt-in default is at least safe.
    assert quality.score(hashing, DEFAULT_THRESHOLDS["hashing"]).false_hit_rate <= 0.02


def test_choose_threshold_respects_the_target(hashing: quality.Prepared) -> None:
    rows = list(range(len(hashing.triples)))
    t = quality.choose_threshold(hashing, GUARDS, rows, 0.02)
    assert quality.score(hashing, t, GUARDS).false_hit_rate <= 0.02
