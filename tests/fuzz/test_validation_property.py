"""The edge check itself, without a server: for any bytes, `validated_body` returns a JSON
object or raises `InvalidParam` (a 400) — never anything else — and a body it accepts is
one the schema's struct accepts."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast.validation import SCHEMAS, InvalidParam, check_depth, validated_body
from tests.fuzz.test_edge_fuzz import JSON_VALUES, SCHEMA_PATHS, VALID, leaf_paths, mutate


def outcome(path: str, raw: bytes) -> dict[str, Any] | None:
    refused: InvalidParam | None = None
    try:
        return validated_body(path, raw)
    except InvalidParam as err:
        refused = err
    assert (refused.status, refused.code) == (400, "ERR_INVALID_REQUEST")
    return None


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(SCHEMA_PATHS), raw=st.binary(max_size=300))
def test_any_bytes(path: str, raw: bytes) -> None:
    outcome(path, raw)


@settings(max_examples=400, deadline=None)
@given(
    path=st.sampled_from(SCHEMA_PATHS),
    data=st.data(),
    action=st.sampled_from(["replace", "delete", "wrap", "extra"]),
    value=JSON_VALUES,
)
def test_mutated_bodies(path: str, data: st.DataObject, action: str, value: Any) -> None:
    where = data.draw(st.sampled_from(leaf_paths(VALID[path])[1:]))
    body = mutate(VALID[path], where, action, value)
    accepted = outcome(path, json.dumps(body).encode())
    if accepted is not None:
        msgspec.convert(accepted, SCHEMAS[path].struct)


def test_every_valid_template_is_accepted() -> None:
    for path in SCHEMA_PATHS:
        assert outcome(path, json.dumps(VALID[path]).encode()) == VALID[path]


@given(depth=st.integers(min_value=1, max_value=200), text=st.text(alphabet='[]{}"\\', max_size=40))
def test_depth_counts_structure_not_string_content(depth: int, text: str) -> None:
    raw = json.dumps({"s": text, "x": json.loads("[" * depth + "]" * depth)}).encode()
    try:
        check_depth(raw)
        accepted = True
    except InvalidParam:
        accepted = False
    assert accepted == (depth + 1 <= 64)
