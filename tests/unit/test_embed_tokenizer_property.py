"""Property: the native WordPiece tokenizer gives Hugging Face `tokenizers`' ids for any text
(run where `tokenizers` is installed; it is not a dependency)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridfast.embeddings.local import load_embedder, minilm_dir

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed: no oracle")

# Mostly letters, marks, punctuation and spaces from many scripts, plus controls and CJK.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
        st.sampled_from(list("aeiou ÉéèñüßçÅøłİı ,.!?'\"-–—…()[]{}#@$%&*+/\\|~`^_\t\n")),
        st.sampled_from(list("中文日本語한국어ไทยعربيहिन्दीΕλληνικάкирилица")),
        st.sampled_from(["\u0301", "\u0308", "\u200b", "\u200d", "\ufe0f", "\u00ad", "\x00"]),
    ),
    max_size=120,
)


@pytest.fixture(scope="module")
def oracle() -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=TEXT)
def test_ids_match_hugging_face(oracle: tokenizers.Tokenizer, text: str) -> None:
    minilm = load_embedder("minilm", device="cpu")
    assert minilm.tokenize([text])[0] == oracle.encode(text).ids  # type: ignore[attr-defined]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=st.lists(TEXT, min_size=40, max_size=80))
def test_truncation_matches_hugging_face(oracle: tokenizers.Tokenizer, words: list[str]) -> None:
    text = " ".join(words)
    minilm = load_embedder("minilm", device="cpu")
    assert minilm.tokenize([text])[0] == oracle.encode(text).ids  # type: ignore[attr-defined]
