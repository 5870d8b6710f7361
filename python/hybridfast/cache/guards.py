"""Checks that run on the top semantic candidates before a cached answer is served.

A cosine threshold alone cannot tell "What is 15% of 80?" from "What is 15% of 90?", or
"safe for dogs" from "not safe for dogs": near-misses score as high as paraphrases. Each
guard below compares the query with a candidate's stored text and vetoes the hit when a
detail that changes the answer differs. They run on at most a few candidates per lookup,
on short texts (tens of microseconds), and are measured one by one on the paraphrase set
(tests/data/cache_paraphrases.jsonl; figures in the README's Caching section).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": "30",
        "forty": "40",
        "fifty": "50",
        "sixty": "60",
        "seventy": "70",
        "eighty": "80",
        "ninety": "90",
        "hundred": "100",
        "thousand": "1000",
        "million": "1000000",
        "billion": "1000000000",
        "first": "1st",
        "second": "2nd",
        "third": "3rd",
        "fourth": "4th",
        "fifth": "5th",
        "tenth": "10th",
        "half": "0.5",
        "twice": "x2",
        "double": "x2",
        "triple": "x3",
        "dozen": "12",
    }
)
# "second" is also a unit of time; only count it as a number before nothing unit-like.

_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "cant",
        "unsafe",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "hasnt",
        "havent",
        "hadnt",
        "mustnt",
        "neednt",
        "aint",
    ]
)

# Pairs of words that flip an answer when one replaces the other.
_ANTONYM_PAIRS = [
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("bigger", "smaller"),
    ("larger", "smaller"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("highest", "lowest"),
    ("high", "low"),
    ("tallest", "shortest"),
    ("fastest", "slowest"),
    ("fast", "slow"),
    ("faster", "slower"),
    ("best", "worst"),
    ("better", "worse"),
    ("cheapest", "most"),
    ("minimum", "maximum"),
    ("min", "max"),
    ("encrypt", "decrypt"),
    ("encryption", "decryption"),
    ("upload", "download"),
    ("import", "export"),
    ("enable", "disable"),
    ("on", "off"),
    ("add", "remove"),
    ("add", "delete"),
    ("start", "stop"),
    ("open", "close"),
    ("lock", "unlock"),
    ("buy", "sell"),
    ("read", "write"),
    ("reading", "writing"),
    ("input", "output"),
    ("before", "after"),
    ("summer", "winter"),
    ("spring", "autumn"),
    ("north", "south"),
    ("east", "west"),
    ("hot", "cold"),
    ("warm", "cold"),
    ("stronger", "weaker"),
    ("strong", "weak"),
    ("benefits", "risks"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("indoors", "outdoors"),
    ("inside", "outside"),
    ("horizontally", "vertically"),
    ("left", "right"),
    ("up", "down"),
    ("first", "last"),
    ("follow", "unfollow"),
    ("follow", "block"),
    ("loss", "gain"),
    ("lose", "gain"),
    ("ascending", "descending"),
    ("true", "false"),
    ("yes", "no"),
    ("male", "female"),
    ("unit", "integration"),
    ("day", "night"),
    ("merge", "delete"),
    ("compress", "decompress"),
    ("zip", "unzip"),
    ("install", "uninstall"),
    ("connect", "disconnect"),
    ("mount", "unmount"),
    ("push", "pull"),
    ("send", "receive"),
    ("sender", "receiver"),
    ("client", "server"),
    ("frontend", "backend"),
    ("happy", "sad"),
]
_ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYMS[_a] = _ANTONYMS.get(_a, frozenset()) | {_b}
    _ANTONYMS[_b] = _ANTONYMS.get(_b, frozenset()) | {_a}

# Words that start a sentence with a capital letter without naming anything.
_COMMON = frozenset(
    [
        "a",
        "an",
        "the",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "i",
        "you",
        "we",
        "they",
        "he",
        "she",
        "it",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "please",
        "give",
        "tell",
        "show",
        "list",
        "explain",
        "write",
        "describe",
        "compute",
        "convert",
        "translate",
        "summarise",
        "summarize",
        "sort",
        "order",
        "set",
        "start",
        "make",
        "get",
        "find",
        "help",
        "in",
        "on",
        "at",
        "for",
        "to",
        "of",
        "and",
        "or",
        "but",
        "if",
        "is",
        "it",
        "s",
        "suggest",
        "tips",
        "multiply",
        "create",
        "start",
        "stop",
        "open",
        "close",
        "add",
        "remove",
        "delete",
        "buy",
        "sell",
        "turn",
        "enable",
        "disable",
        "lock",
        "unlock",
        "hello",
        "hi",
        "hey",
        "ok",
        "okay",
        "yes",
        "no",
        "not",
        "why",
    ]
)


# Closed classes: two different members in the same slot ask different questions.
_CLASSES = [
    "red orange yellow green blue purple violet pink brown black white grey gray",
    "bit byte kilobyte megabyte gigabyte terabyte petabyte kb mb gb tb",
    "millisecond second minute hour day week month year decade century",
    "monday tuesday wednesday thursday friday saturday sunday",
    "january february march april may june july august september october november december",
    "spring summer autumn fall winter",
    "cheapest fastest slowest easiest hardest safest best worst largest smallest biggest "
    "longest shortest tallest highest lowest oldest newest quickest cheaper faster slower "
    "easier harder safer better worse larger smaller bigger longer shorter",
    "breakfast lunch dinner",
    "daily weekly monthly yearly annually hourly",
    "celsius fahrenheit kelvin",
    "mile kilometer kilometre meter metre foot feet inch yard centimeter",
]
_CLASS_OF: dict[str, int] = {}
for _i, _members in enumerate(_CLASSES):
    for _w in _members.split():
        _CLASS_OF.setdefault(_w, _i)
# Pairs of the same class that say the same thing.
_SAME = {
    frozenset(p)
    for p in [
        ("fastest", "quickest"),
        ("faster", "quicker"),
        ("largest", "biggest"),
        ("larger", "bigger"),
        ("fall", "autumn"),
        ("grey", "gray"),
        ("meter", "metre"),
        ("kilometer", "kilometre"),
        ("tallest", "highest"),
    ]
}
_DIRECTION = re.compile(r"\b(?:to|into)\b", re.IGNORECASE)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "i",
        "you",
        "we",
        "my",
        "your",
        "how",
        "what",
        "which",
        "who",
        "why",
        "when",
        "where",
        "of",
        "in",
        "on",
        "for",
        "with",
        "and",
        "or",
        "from",
        "by",
        "it",
        "its",
        "this",
        "that",
        "me",
        "please",
        "way",
        "best",
    ]
)


class Features(NamedTuple):
    words: frozenset[str]
    numbers: tuple[str, ...]
    negated: bool
    entities: frozenset[str]
    # Content words before and after the first "to"/"into" (a conversion's direction).
    before: frozenset[str]
    after: frozenset[str]


def _normal(word: str) -> str:
    word = word.lower()
    if word.endswith(("'s", "’s")):  # possessive: "Australia's" is Australia
        word = word[:-2]
    return word.replace("'", "").replace("’", "")


@lru_cache(maxsize=4096)
def features(text: str) -> Features:
    """What the guards compare, extracted once per text (cached: stored texts recur)."""
    matches = list(_WORD.finditer(text))
    words = [_normal(m.group()) for m in matches]
    numbers = sorted(
        [n.replace(",", "") for n in _NUMBER.findall(text)]
        + [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS]
    )
    negations = sum(1 for w in words if w in _NEGATIONS or (w.endswith("nt") and w[:-2] in _AUX))
    entities: set[str] = set()
    previous_end = 0
    for m, word in zip(matches, words, strict=True):
        token = m.group()
        # A sentence starts at the beginning and after . ? ! : between two words.
        sentence_start = previous_end == 0 or any(
            c in ".?!:" for c in text[previous_end : m.start()]
        )
        previous_end = m.end()
        if word == "i" or not (token[0].isupper() or any(c.isupper() for c in token[1:])):
            continue
        # A capital at the start of a sentence says nothing; there only mixed case or an
        # acronym ("iPhone", "AWS") marks a name.
        if sentence_start and not (len(token) > 1 and any(c.isupper() for c in token[1:])):
            continue
        entities.add(word)
    before: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()
    split = _DIRECTION.search(text)
    if split is not None:
        before = frozenset(
            _normal(w) for w in _WORD.findall(text[: split.start()]) if _normal(w) not in _STOP
        )
        after = frozenset(
            _normal(w) for w in _WORD.findall(text[split.end() :]) if _normal(w) not in _STOP
        )
    return Features(
        frozenset(words),
        tuple(numbers),
        negations % 2 == 1,
        frozenset(entities),
        before,
        after,
    )


_AUX = frozenset(
    [
        "do",
        "does",
        "did",
        "is",
        "are",
        "was",
        "were",
        "wo",
        "would",
        "should",
        "could",
        "has",
        "have",
        "had",
        "must",
        "need",
        "ca",
    ]
)


class Verdict(NamedTuple):
    ok: bool
    guard: str | None = None  # which guard vetoed


GUARDS = ("numbers", "negation", "entities", "antonyms", "details", "direction")


def check(query: str, stored: str, enabled: Iterable[str] = GUARDS) -> Verdict:
    """Whether `stored`'s answer may serve `query` as far as the enabled guards can tell."""
    if query == stored:
        return Verdict(True)
    q, s = features(query), features(stored)
    for guard in enabled:
        if guard == "numbers" and q.numbers != s.numbers:
            return Verdict(False, guard)
        if guard == "negation" and q.negated != s.negated:
            return Verdict(False, guard)
        # An entity of one side must appear (in any case) on the other.
        if guard == "entities" and (q.entities - s.words or s.entities - q.words):
            return Verdict(False, guard)
        if guard == "antonyms" and _antonym_swap(q.words, s.words):
            return Verdict(False, guard)
        if guard == "details" and _class_swap(q.words, s.words):
            return Verdict(False, guard)
        if (
            guard == "direction"
            and (q.before & s.after - s.before)
            and (q.after & s.before - s.after)
        ):
            return Verdict(False, guard)
    return Verdict(True)


def _antonym_swap(a: frozenset[str], b: frozenset[str]) -> bool:
    """A word only one side has whose opposite only the other side has."""
    only_a, only_b = a - b, b - a
    return any(_ANTONYMS.get(w, frozenset()) & only_b for w in only_a)


def _class_swap(a: frozenset[str], b: frozenset[str]) -> bool:
    """A member of a closed class (a colour, a unit, a superlative...) only one side has,
    facing another member of the same class only the other side has."""
    only_a, only_b = a - b, b - a
    for w in only_a:
        c = _CLASS_OF.get(w)
        if c is None:
            continue
        for v in only_b:
            if _CLASS_OF.get(v) == c and frozenset((w, v)) not in _SAME:
                return True
    return False
