"""OpenAI's Responses API as an upstream, for Responses clients on the official API: the
client's own body goes to `POST /responses` (same protocol: pass-through), with the
deployment's model and `store: false` (the gateway keeps conversations itself, in its own
store), and the answer comes back as the gateway's form with the upstream's output items kept
whole in `ChatAnswer.extra["response_output"]` (the Responses encoder sends them as they came).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson

from hybridfast.providers.base import ProviderError, stream_lines
from hybridfast.types import ChatAnswer, Deployment, StreamEvent, Usage

if TYPE_CHECKING:
    from hybridfast.providers.base import Provider


def responses_body(native: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    body = {k: v for k, v in native.items() if k != "previous_response_id"}
    body["model"] = model
    body["store"] = False
    if stream:
        body["stream"] = True
    return body


def usage_from_responses(u: dict[str, Any] | None) -> Usage | None:
    if not u:
        return None
    details = u.get("input_tokens_details") or {}
    out_details = u.get("output_tokens_details") or {}
    prompt = int(u.get("input_tokens") or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=int(u.get("output_tokens") or 0),
        cached_input_tokens=min(int(details.get("cached_tokens") or 0), prompt),
        reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
    )


def _finish(data: dict[str, Any], had_calls: bool) -> str:
    if data.get("status") == "incomplete":
        reason = (data.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if had_calls else "stop"


def answer_from_response(data: Any, deployment: Deployment, name: str) -> ChatAnswer:
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise ProviderError(f"{name}: the response has no output")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for item in data["output"]:
        kind = item.get("type")
        if kind == "message":
            text.extend(
                p.get("text", "")
                for p in item.get("content") or ()
                if p.get("type") == "output_text"
            )
        elif kind == "function_call":
            fn = {"name": item.get("name", ""), "arguments": item.get("arguments", "")}
            calls.append({"id": item.get("call_id"), "type": "function", "function": fn})
        elif kind == "reasoning":
            reasoning.extend(s.get("text", "") for s in item.get("summary") or ())
    extra: dict[str, Any] = {"response_output": data["output"]}
    if reasoning:
        extra["message"] = {"reasoning_content": "".join(reasoning)}
    answer = ChatAnswer(
        content="".join(text),
        finish_reason=_finish(data, bool(calls)),
        tool_calls=calls,
        model=str(data.get("model") or deployment.model),
        deployment=deployment.id,
        extra=extra,
    )
    usage = usage_from_responses(data.get("usage"))
    if usage is not None:
        answer.usage = usage
    else:
        answer.usage.estimated = True
    return answer


def _event_to_gateway(
    event: dict[str, Any], calls: dict[int, int]
) -> tuple[StreamEvent | None, bool]:
    """One upstream event as a gateway event; the flag says the response finished."""
    kind = event.get("type")
    if kind == "response.output_text.delta":
        return (StreamEvent(event.get("delta") or None) if event.get("delta") else None), False
    if kind == "response.reasoning_summary_text.delta" and event.get("delta"):
        return StreamEvent(extra={"message": {"reasoning_content": event["delta"]}}), False
    if kind == "response.output_item.added":
        item = event.get("item") or {}
        if item.get("type") != "function_call":
            return None, False
        index = calls[event.get("output_index", 0)] = len(calls)
        call = {
            "index": index,
            "id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": "",
        }
        return StreamEvent(tool_calls=[call]), False
    if kind == "response.function_call_arguments.delta":
        index = calls.get(event.get("output_index", 0), 0)
        call = {"index": index, "id": None, "name": None, "arguments": event.get("delta") or ""}
        return StreamEvent(tool_calls=[call]), False
    if kind in ("response.completed", "response.incomplete"):
        data = event.get("response") or {}
        return (
            StreamEvent(
                finish_reason=_finish(data, bool(calls)),
                usage=usage_from_responses(data.get("usage")),
            ),
            True,
        )
    if kind in ("response.failed", "error"):
        error = (event.get("response") or {}).get("error") or event
        raise ProviderError(f"the upstream sent an error mid-stream: {error.get('message', '')}")
    return None, False


async def stream_response(
    provider: Provider, body: dict[str, Any], *, retries: int
) -> AsyncGenerator[list[StreamEvent], None]:
    calls: dict[int, int] = {}  # output index → tool-call index
    async for lines in stream_lines(provider, "/responses", body, retries=retries):
        batch: list[StreamEvent] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # `event:` lines repeat the data's own type
            try:
                event = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                raise ProviderError(f"{provider.name}: a stream event is not valid") from None
            try:
                piece, _ = _event_to_gateway(event, calls)
            except ProviderError as exc:
                raise ProviderError(f"{provider.name}: {exc.message}") from None
            if piece is not None:
                batch.append(piece)
        if batch:
            yield batch
