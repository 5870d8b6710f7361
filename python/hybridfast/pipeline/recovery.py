"""Putting answers together and taking them apart: the text and tool calls of a stream as one
answer, a broken stream's continuation on the next deployment, a cached answer replayed as a
real stream, and a whole upstream answer as a one-batch stream."""

from __future__ import annotations

from typing import Any

import msgspec

from hybridfast.types import ChatAnswer, ChatRequest, StreamEvent, Usage

CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without "
    "repeating anything and without any preamble."
)


def continuation(request: ChatRequest, partial: str, kind: str) -> ChatRequest:
    """The request that continues a broken answer: the partial answer as an assistant turn
    (Anthropic continues a final assistant turn natively; the others are asked to)."""
    messages = [*request.messages, {"role": "assistant", "content": partial}]
    if kind != "anthropic":
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    return msgspec.structs.replace(request, messages=messages)


def split_for_replay(text: str, pieces: int = 8) -> list[str]:
    """A cached text in a few word-aligned pieces, so a replayed stream looks like one."""
    if not text:
        return []
    words = text.split(" ")
    step = max(1, -(-len(words) // pieces))
    out = []
    for i in range(0, len(words), step):
        piece = " ".join(words[i : i + step])
        out.append(piece if i == 0 else " " + piece)
    return out


def tool_deltas(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped whole tool calls as stream deltas (one per call)."""
    return [
        {
            "index": i,
            "id": c.get("id"),
            "name": c["function"]["name"],
            "arguments": c["function"]["arguments"],
        }
        for i, c in enumerate(tool_calls)
    ]


def replay_events(answer: ChatAnswer, stream: bool) -> list[StreamEvent]:
    """A stored answer as stream events: word pieces for a stream, one piece otherwise."""
    pieces = split_for_replay(answer.content) if stream else [answer.content]
    events = [StreamEvent(piece) for piece in pieces if piece]
    if answer.tool_calls:
        events.append(StreamEvent(tool_calls=tool_deltas(answer.tool_calls)))
    events.append(StreamEvent(finish_reason=answer.finish_reason))
    return events


def as_batch(answer: ChatAnswer) -> list[StreamEvent]:
    """A whole upstream answer as the one batch of a one-batch stream."""
    return [
        StreamEvent(
            answer.content or None,
            tool_calls=tool_deltas(answer.tool_calls) if answer.tool_calls else None,
            finish_reason=answer.finish_reason,
            usage=None if answer.usage.estimated else answer.usage,
            extra=answer.extra or None,
        )
    ]


def merge_extra(into: dict[str, Any], piece: dict[str, Any]) -> None:
    """Adds a stream piece's extra fields: text is appended (reasoning deltas), lists are
    extended (logprobs), objects merged, anything else replaced."""
    for key, value in piece.items():
        have = into.get(key)
        if isinstance(have, str) and isinstance(value, str):
            into[key] = have + value
        elif isinstance(have, list) and isinstance(value, list):
            have.extend(value)
        elif isinstance(have, dict) and isinstance(value, dict):
            merge_extra(have, value)
        elif isinstance(value, dict):
            into[key] = {}
            merge_extra(into[key], value)
        elif isinstance(value, list):
            into[key] = list(value)
        else:
            into[key] = value


class Assembly:
    """What the attempts of one request produced so far: text, tool calls, finish reason."""

    __slots__ = ("calls", "extra", "finish", "texts", "whole")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.extra: dict[str, Any] = {}
        # A whole answer (a call that was not streamed): it is the answer, nothing to join.
        self.whole: ChatAnswer | None = None

    def add(self, batch: list[StreamEvent]) -> Usage | None:
        """Takes in one batch; returns the usage it reported, if any."""
        usage = None
        for event in batch:
            if event.text:
                self.texts.append(event.text)
            if event.tool_calls:
                self._add_tools(event.tool_calls)
            if event.finish_reason:
                self.finish = event.finish_reason
            if event.usage is not None:
                usage = event.usage
            if event.extra:
                merge_extra(self.extra, event.extra)
        return usage

    def _add_tools(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            index = d.get("index", 0)
            call = self.calls.get(index)
            if call is None:
                call = self.calls[index] = {
                    "id": None,
                    "type": "function",
                    "function": {"name": "", "arguments": ""},
                }
            if d.get("id"):
                call["id"] = d["id"]
            if d.get("name"):
                call["function"]["name"] = d["name"]
            call["function"]["arguments"] += d.get("arguments") or ""

    def text(self, since: int = 0) -> str:
        return "".join(self.texts[since:])

    def output_text(self, since: int = 0) -> str:
        """The text and tool-call arguments produced since piece `since` (for estimates)."""
        return self.text(since) + "".join(c["function"]["arguments"] for c in self.calls.values())

    def answer(self, *, usage: Usage, model: str, deployment: str, cost: int) -> ChatAnswer:
        whole = self.whole
        if whole is not None:
            whole.usage, whole.cost, whole.deployment = usage, cost, deployment
            return whole
        return ChatAnswer(
            content=self.text(),
            finish_reason=self.finish or "stop",
            tool_calls=[self.calls[i] for i in sorted(self.calls)],
            usage=usage,
            model=model,
            deployment=deployment,
            cost=cost,
            extra=self.extra,
        )
