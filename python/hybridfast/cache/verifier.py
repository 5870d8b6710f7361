"""The semantic cache's last check: a calibrated estimate that a candidate asks the same
question as the query, with a threshold chosen for a stated error bound.

One cosine cannot separate paraphrases from near-misses, and one static cosine threshold
cannot bound the error (a threshold strict enough for long texts that differ in one detail
throws away most paraphrases). The verifier combines the cosine with the share of content
words the two texts have in common (a rewording that keeps the words needs less cosine than
one that changes them) and with the kind of query (a question or not, its length), which
shifts how much the cosine counts, in a logistic model: a few numbers fitted on public
labelled paraphrase and question-pair data (`benches/cache_calibrate.py`; data, licences
and figures in docs/cache.md).
The table that turns `max_error_rate` into a probability threshold comes from the same
calibration split, which also holds public question pairs: for each bound, the lowest
threshold at which the 95% upper bounds of both the wrong-answer rate on duplicates and the
false-hit rate on non-duplicates stayed within it, on the whole split and on each corpus in
it alone (a user's traffic is one kind of text, not the mix). Richer lexical features
(uncovered words, trigrams) and token-level alignment of the encoder's own states
(BERTScore-like) gained little on the held-out split, so they are not used.

Numbers, names and negations that differ are the guards' job (cache/guards.py): they veto
a candidate before it gets here, and the model was fitted on what passes them. Everything
here is pure Python on two short texts (tens of microseconds), run on at most `top_k`
candidates per lookup, after the cosine threshold and the guards.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|\d+(?:[.,]\d+)*")

# Function words: what two wordings of one question may freely differ in.
_FUNCTION_WORDS = """
    a an the of to in on at for from by with about as into onto over under and or but nor
    so if then than that this these those there here it its it's is are was were be been
    being am do does did doing done have has had having can could would should will shall
    may might must i me my mine you your yours we us our they them their he him his she her
    what which who whom whose when where why how whether any some all each every much many
    more most very just also too please way ways get got getting make made making go going
    good best better thing things someone something anyone anything one ones use using used
    need want know like really actually possible possibly what's how's where's who's
    when's why's that's there's here's i'm i've i'd you're we're they're let's tell explain
    describe show give"""
_FUNCTION = frozenset(_FUNCTION_WORDS.split())

FEATURES = (
    "cosine",
    "content_jaccard",
    "question",
    "question_x_cosine",
    "log_words",
    "log_words_x_cosine",
)
_QUESTION_START = re.compile(
    r"(what|how|why|when|where|who|which|is|are|can|do|does|should|could|would|will|did)\b"
)


@dataclass(frozen=True)
class Model:
    """A logistic model over `FEATURES` and the error-bound table that goes with it."""

    weights: tuple[float, ...]
    bias: float
    # (max error rate, probability threshold), error rates ascending.
    thresholds: tuple[tuple[float, float], ...]
    # The cosine a candidate needs before the verifier looks at it.
    floor: float

    def probability(self, features: tuple[float, ...]) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features, strict=True))
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def threshold_for(self, max_error_rate: float) -> float:
        """The probability a candidate needs so that, as calibrated, wrong answers and false
        hits each stay at or under `max_error_rate`: the table's entry for the largest
        calibrated rate not above it (stricter when it falls between entries)."""
        chosen = 1.0
        for rate, threshold in self.thresholds:
            if rate <= max_error_rate + 1e-12:
                chosen = threshold
        return chosen


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# Texts up to this long are remembered (stored texts recur); a longer one is worked out
# each time, so the cache never holds thousands of arbitrarily long prompts.
_CACHED_CHARS = 2048


def content_words(text: str) -> frozenset[str]:
    """The stems of a text's content words."""
    return _content_words(text) if len(text) <= _CACHED_CHARS else _content_words.__wrapped__(text)


@lru_cache(maxsize=8192)
def _content_words(text: str) -> frozenset[str]:
    words = (w.lower().replace("’", "'") for w in _WORD.findall(text))
    return frozenset(_stem(w) for w in words if w not in _FUNCTION)


def query_kind(text: str) -> tuple[float, float]:
    """Whether the query asks a question (1.0 or 0.0) and the log of its word count. What
    a cosine says differs by kind of text: a short question reworded keeps a cosine near 1
    while another question falls well below it; between long sentences one differing detail
    barely moves it (the fitted weights, docs/cache.md)."""
    head = text[:_CACHED_CHARS].strip().lower()  # the words past it change the log little
    question = text.rstrip().endswith("?") or _QUESTION_START.match(head) is not None
    return float(question), math.log(len(_WORD.findall(head)) + 2)


def features(query: str, stored: str, cosine: float) -> tuple[float, ...]:
    """The verifier's inputs for one (query, candidate) pair, in `FEATURES` order."""
    q, s = content_words(query), content_words(stored)
    union = q | s
    question, log_words = query_kind(query)
    return (
        cosine,
        len(q & s) / len(union) if union else 1.0,
        question,
        question * cosine,
        log_words,
        log_words * cosine,
    )


# Fitted by benches/cache_calibrate.py on the calibration split (docs/cache.md); regenerate
# with that script rather than editing by hand.
MINILM = Model(
    weights=(14.3372, 1.057, -11.8227, 15.3036, 3.7774, -3.048),
    bias=-15.5152,
    thresholds=(
        (0.005, 0.96),
        (0.01, 0.93),
        (0.02, 0.86),
        (0.03, 0.84),
        (0.05, 0.78),
        (0.1, 0.55),
    ),
    floor=0.8,
)

MODELS = {"minilm": MINILM}


class Verifier:
    """The calibrated check for one embedder at one error bound."""

    def __init__(self, model: Model, max_error_rate: float) -> None:
        self.model = model
        self.max_error_rate = max_error_rate
        self.threshold = model.threshold_for(max_error_rate)

    def probability(self, query: str, stored: str, cosine: float) -> float:
        if query == stored:
            return 1.0
        return self.model.probability(features(query, stored, cosine))

    def accepts(self, query: str, stored: str, cosine: float) -> bool:
        return self.probability(query, stored, cosine) >= self.threshold


def verifier_for(embedder: str, max_error_rate: float | None) -> Verifier | None:
    """The verifier calibrated for `embedder`, or None when there is none (the hashing
    embedder) or the bound is switched off (`max_error_rate: null`)."""
    if max_error_rate is None:
        return None
    model = MODELS.get(embedder)
    return Verifier(model, max_error_rate) if model is not None else None
