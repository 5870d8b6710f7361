"""Checks of a request in the gateway's own form, whatever protocol it came in: the ones the
Python API and every client protocol share."""

from __future__ import annotations

from typing import Any

from hybridfast.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI-shaped messages: a non-empty list of objects with a known role and string or
    typed-part content. Raises `InvalidRequest` naming the first bad one."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object")
        if m.get("role") not in _ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of system, developer, user, assistant, tool"
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"messages[{i}].content must be a string or a list of parts")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise InvalidRequest(f"messages[{i}].content[{j}] must be a typed part")
    return messages
