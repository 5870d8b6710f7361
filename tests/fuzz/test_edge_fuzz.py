"""Property: no body, however malformed, gets a 5xx — random JSON, valid requests with one
part mutated, raw bytes, deep nesting — on every endpoint with a schema, streaming or not.
Every 4xx is JSON in the client protocol's shape with a stable ERR_ code."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridfast.validation import SCHEMAS
from tests.fuzz.conftest import Answer, Gateway

VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_tokens": 16,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "user": "u1",
    },
    "/v1/messages": {
        "model": "chat",
        "max_tokens": 16,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "metadata": {"user_id": "u1"},
    },
    "/v1/messages/count_tokens": {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/embeddings": {"model": "hashing", "input": ["hi", "there"], "dimensions": 8},
}
VALID["/chat/completions"] = VALID["/v1/chat/completions"]
VALID["/embeddings"] = VALID["/v1/embeddings"]
# Endpoints whose adapters check their own bodies (no edge schema registered yet).
VALID["/v1/responses"] = {"model": "chat", "input": "hi", "max_output_tokens": 16}
VALID["/v1/completions"] = {"model": "chat", "prompt": "hi", "max_tokens": 16}

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "user", "text", "image_url", "image", "tool_use", "x" * 300]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "text", "role", "url", "x", ""]), children, max_size=4
        )
    ),
    max_leaves=12,
)
SCHEMA_PATHS = sorted(SCHEMAS)
PATHS = sorted(set(SCHEMAS) | set(VALID))


def check(answer: Answer, what: object) -> None:
    assert answer.status < 500, f"{answer.status} for {what!r}: {answer.body[:300]!r}"
    if answer.status >= 400 and answer.status != 499:
        error = json.loads(answer.body)
        code = error["error"]["code"]
        assert isinstance(code, str)
        assert code.startswith("ERR_"), code


def post(gateway: Gateway, path: str, body: Any, stream: bool = False) -> None:
    if stream and isinstance(body, dict):
        body = {**body, "stream": True}
    raw = json.dumps(body).encode()
    check(gateway.send(path, raw), body)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += leaf_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += leaf_paths(child, (*prefix, i))
    return out


def mutate(body: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    body = json.loads(json.dumps(body))
    if not path:
        return value
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "wrap":
        parent[last] = [parent[last]] if isinstance(value, list) else {"x": parent[last]}
    elif action == "extra" and isinstance(parent, dict):
        parent[f"extra_{last}"] = value
    return body


# A few hundred examples per property in CI (seconds); HYBRIDFAST_FUZZ_EXAMPLES=20000 for a
# long hunt.
FUZZ = settings(
    max_examples=int(os.environ.get("HYBRIDFAST_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(path=st.sampled_from(PATHS), body=JSON_VALUES, stream=st.booleans())
def test_random_json_bodies_never_get_a_5xx(
    served: Gateway, path: str, body: Any, stream: bool
) -> None:
    post(served, path, body, stream)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    data=st.data(),
    action=st.sampled_from(["replace", "replace", "delete", "wrap", "extra"]),
    value=JSON_VALUES,
    stream=st.booleans(),
)
def test_valid_bodies_with_one_part_mutated_never_get_a_5xx(
    served: Gateway, path: str, data: st.DataObject, action: str, value: Any, stream: bool
) -> None:
    valid = VALID[path]
    where = data.draw(st.sampled_from(leaf_paths(valid)[1:]))
    post(served, path, mutate(valid, where, action, value), stream)


@FUZZ
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=200))
def test_raw_bytes_never_get_a_5xx(served: Gateway, path: str, raw: bytes) -> None:
    check(served.send(path, raw), raw)


@FUZZ
@given(path=st.sampled_from(PATHS), data=st.data(), cut=st.integers(min_value=1, max_value=400))
def test_truncated_valid_bodies_never_get_a_5xx(
    served: Gateway, path: str, data: st.DataObject, cut: int
) -> None:
    raw = json.dumps(VALID[path]).encode()
    check(served.send(path, raw[: cut % len(raw)]), raw[: cut % len(raw)])


@pytest.mark.parametrize("depth", [10, 63, 65, 200, 260, 1000, 5000])
@pytest.mark.parametrize("path", PATHS)
def test_deep_nesting_is_refused_or_served_never_a_5xx(
    served: Gateway, path: str, depth: int
) -> None:
    # Spliced in as text: Python's own json module cannot build the deepest ones.
    raw = json.dumps(VALID[path])[:-1] + ', "x_extra": ' + "[" * depth + "]" * depth + "}"
    answer = served.send(path, raw.encode())
    check(answer, depth)
    if depth > 64:
        assert answer.status == 400
        assert b"nested deeper than 64" in answer.body


@FUZZ
@given(
    value=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)
def test_any_request_id_header_never_gets_a_5xx(served: Gateway, value: str) -> None:
    for path in ("/v1/embeddings", "/v1/chat/completions"):
        try:
            answer = served.send(
                path,
                json.dumps(VALID[path]).encode(),
                {"x-hybridfast-request-id": value},
            )
        except ValueError:
            return  # http.client refuses to send a header with CR/LF itself
        check(answer, value)
