"""The malformed shapes that used to reach the pipeline and answer 500: each is now a 400
`ERR_INVALID_REQUEST` naming the bad field in `param` (OpenAI shape) or the message
(Anthropic shape), before anything else runs. Unknown fields still pass through."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hybridfast.validation import validated_body
from hybridfast.validation.schema import InvalidParam
from tests.fuzz.conftest import Gateway

USER = {"role": "user", "content": "hi"}
CHAT = {"model": "chat", "messages": [USER]}
MESSAGES = {"model": "chat", "max_tokens": 16, "messages": [USER]}

CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": [], "content": "x"}]},
        "messages[0].role",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        "messages[0].content[0].text",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
        "messages[0].content[0].text",
    ),
    ("/v1/chat/completions", {**CHAT, "tools": [1]}, "tools[0]"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [USER, {"role": "assistant", "tool_calls": "str"}]},
        "messages[1].tool_calls",
    ),
    (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
        },
        "messages[0].content[0].image_url",
    ),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 2**63}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 2**64 - 1}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
    ("/v1/chat/completions", {**CHAT, "temperature": 9}, "temperature"),
    (
        "/v1/messages",
        {
            **MESSAGES,
            "messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}],
        },
        "messages[0].content[0].source",
    ),
    (
        "/v1/messages",
        {**MESSAGES, "system": [{"type": "text", "text": 5}]},
        "system[0].text",
    ),
    ("/v1/messages", {**MESSAGES, "max_tokens": 2**63}, "max_tokens"),
    ("/v1/messages", {**MESSAGES, "metadata": {"user_id": 7}}, "metadata.user_id"),
    ("/v1/embeddings", {"model": "hashing", "input": [[1, "x"]]}, "input[0][1]"),
    ("/v1/embeddings", {"model": "hashing", "input": "x", "dimensions": 2**63}, "dimensions"),
]


@pytest.mark.parametrize(("path", "body", "param"), CASES, ids=[c[2] for c in CASES])
def test_malformed_shapes_are_400_naming_the_field(
    served: Gateway, path: str, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidParam) as err:
        validated_body(path, json.dumps(body).encode())
    assert err.value.param == param
    answer = served.send(path, json.dumps(body).encode())
    assert answer.status == 400, answer.body
    error = json.loads(answer.body)["error"]
    assert error["code"] == "ERR_INVALID_REQUEST"
    if path.startswith("/v1/messages"):
        assert param in error["message"]
    else:
        assert error["param"] == param


def test_deep_extra_fields_are_400_not_the_encoders_recursion_error(served: Gateway) -> None:
    body = {**CHAT, "x_extra": json.loads("[" * 300 + "]" * 300)}
    answer = served.send("/v1/chat/completions", json.dumps(body).encode())
    assert answer.status == 400
    assert json.loads(answer.body)["error"]["code"] == "ERR_INVALID_REQUEST"


def test_unknown_fields_still_pass_through(served: Gateway) -> None:
    body = {**CHAT, "x_vendor_option": {"nested": [1, 2, {"deep": True}]}, "seed": 7}
    answer = served.send("/v1/chat/completions", json.dumps(body).encode())
    assert answer.status == 200, answer.body


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "[" * 500 + "{" * 500}]}
    assert validated_body("/v1/chat/completions", json.dumps(body).encode())["model"] == "chat"
