"""What a cached answer is filed under, and which requests are cached at all."""

from __future__ import annotations

from typing import Any

import pytest

from hybridfast.cache import guards
from hybridfast.cache import keys as K
from hybridfast.config import CacheConfig
from hybridfast.types import Caller, ChatRequest


def req(text: str = "hi", **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    messages = kw.pop("messages", [{"role": "user", "content": text}])
    return ChatRequest(model=kw.pop("model", "m"), messages=messages, **kw)


def test_exact_key_changes_with_everything_that_changes_the_answer() -> None:
    base = K.exact_key(req(), "t")
    variants = [
        req(model="other"),
        req("hello"),
        req(temperature=0.0001),
        req(top_p=0.5),
        req(max_tokens=10),
        req(stop=["x"]),
        req(tools=[{"type": "function", "function": {"name": "f"}}]),
        req(tool_choice="none"),
        req(response_format={"type": "json_object"}),
        req(extra={"seed": 1}),
        req(
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        ),
    ]
    keys = {K.exact_key(r, "t") for r in variants}
    assert base not in keys
    assert len(keys) == len(variants)
    assert K.exact_key(req(), "other-tenant") != base


def test_exact_key_ignores_what_does_not_change_the_answer() -> None:
    base = K.exact_key(req(), "t")
    assert K.exact_key(req(stream=True, include_usage=True), "t") == base
    assert K.exact_key(req(user="end-user-7"), "t") == base
    assert K.exact_key(req(cache_control="no-cache"), "t") == base
    # Key order inside dicts does not matter.
    a = req(response_format={"type": "json_schema", "schema": {"a": 1, "b": 2}})
    b = req(response_format={"schema": {"b": 2, "a": 1}, "type": "json_schema"})
    assert K.exact_key(a, "t") == K.exact_key(b, "t")
    assert len(base) == 16
    assert 0 < K.entry_id(base) < 2**63


def test_tenant_is_team_then_key_unless_shared() -> None:
    assert K.tenant_of(Caller(key_name="k", team="a"), False) == "team:a"
    assert K.tenant_of(Caller(key_name="k"), False) == "key:k"
    assert K.tenant_of(Caller(), False) == ""
    assert K.tenant_of(Caller(key_name="k", team="a"), True) == ""


def test_policy() -> None:
    cfg = CacheConfig()
    assert K.policy(req(), cfg) == K.Policy(True, True)
    assert K.policy(req(temperature=0.7), cfg) == K.Policy(False, False)
    assert K.policy(req(temperature=None), cfg) == K.Policy(False, False)
    assert K.policy(req(cache_control="no-cache"), cfg) == K.Policy(False, True)
    assert K.policy(req(cache_control="no-store"), cfg) == K.Policy(False, False)
    assert K.policy(req(extra={"n": 3}), cfg) == K.Policy(False, False)
    lax = CacheConfig(cache_nondeterministic=True)
    assert K.policy(req(temperature=0.7), lax) == K.Policy(True, True)
    unset = CacheConfig(unset_temperature_is_deterministic=True)
    assert K.policy(req(temperature=None), unset) == K.Policy(True, True)
    assert K.policy(req(temperature=0.5), unset) == K.Policy(False, False)


def test_semantic_target_scopes() -> None:
    sys_a = [{"role": "system", "content": "A"}]
    sys_b = [{"role": "system", "content": "B"}]
    user = [{"role": "user", "content": "What is 2+2?"}]
    a = K.semantic_target(req(messages=sys_a + user), "t", "last_user")
    b = K.semantic_target(req(messages=sys_b + user), "t", "last_user")
    c = K.semantic_target(req(messages=sys_a + user), "u", "last_user")
    assert a is not None
    assert b is not None
    assert c is not None
    assert a.text == "What is 2+2?"
    assert len({a.scope, b.scope, c.scope}) == 3
    # Earlier turns must match exactly when only the last message is embedded.
    history = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    d = K.semantic_target(req(messages=sys_a + history + user), "t", "last_user")
    assert d is not None
    assert d.scope != a.scope
    e = K.semantic_target(req(messages=sys_a + history + user), "t", "conversation")
    assert e is not None
    assert e.text == "user: x\nassistant: y\nuser: What is 2+2?"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "prefill"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": "   "}],
    ],
)
def test_semantic_target_skips_what_text_cannot_judge(messages: list[dict[str, Any]]) -> None:
    assert K.semantic_target(req(messages=messages), "t", "last_user") is None


def test_text_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    target = K.semantic_target(req(messages=[{"role": "user", "content": parts}]), "", "last_user")
    assert target is not None
    assert target.text == "a\nb"


@pytest.mark.parametrize(
    ("query", "stored", "guard"),
    [
        ("What is 15% of 90?", "What is 15% of 80?", "numbers"),
        ("How much is fifteen percent of 80?", "What is 16% of 80?", "numbers"),
        ("Why doesn't my code compile?", "Why does my code compile?", "negation"),
        ("Which foods are not safe for dogs?", "Which foods are safe for dogs?", "negation"),
        ("What is the capital of Austria?", "What is the capital of Australia?", "entities"),
        ("How do I decrypt a file?", "How do I encrypt a file?", "antonyms"),
        ("How many bytes are in 1 megabyte?", "How many bytes are in 1 kilobyte?", "details"),
        ("Why is the sky red?", "Why is the sky blue?", "details"),
        (
            "How do I convert an integer to a string in Java?",
            "How do I convert a string to an integer in Java?",
            "direction",
        ),
    ],
)
def test_guards_veto_near_misses(query: str, stored: str, guard: str) -> None:
    verdict = guards.check(query, stored)
    assert not verdict.ok
    assert verdict.guard == guard
    assert guards.check(query, stored, [g for g in guards.GUARDS if g != guard]).ok


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("How much is fifteen percent of 80?", "What is 15% of 80?"),
        ("how do i reverse a python list", "How do I reverse a list in Python?"),
        ("Is drinking coffee healthy?", "Is coffee good for you?"),
        ("Why is my laptop not charging?", "Why isn't my laptop charging?"),
        ("Which city is Australia's capital?", "What is the capital of Australia?"),
        ("What's the way to reverse a Python list?", "How do I reverse a list in Python?"),
        ("What is the fastest way to learn Spanish?", "What is the quickest way to learn Spanish?"),
        (
            "How can I parse a string into an int in Java?",
            "How do I convert a string to an integer in Java?",
        ),
    ],
)
def test_guards_let_paraphrases_through(query: str, stored: str) -> None:
    assert guards.check(query, stored).ok
