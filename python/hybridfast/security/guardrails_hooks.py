"""Attaches the configured guardrails to a gateway: `install(gateway)` (in `server.features`).

`before_route` checks every message text of a chat request (and the inputs of an embeddings
request): `block` refuses with 400 `ERR_GUARDRAIL_BLOCKED`, `mask` rewrites the texts before
the cache, the router or any upstream sees them, `warn` lets the request through. With
`answers: true`, `after_answer` checks the answer: a non-streaming answer is masked, or
emptied with `finish_reason: content_filter` when the action is `block`; a streamed answer has
already been sent, so it is reported in the log and the metric only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import msgspec

from hybridfast.errors import GatewayError
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.security.guardrails import TRIGGERED, Finding, Guardrail, build, mask
from hybridfast.types import ChatAnswer, ChatRequest, EmbeddingRequest

log = logging.getLogger("hybridfast.guardrails")
HEADER = "x-hybridfast-guardrails"


class GuardrailBlocked(GatewayError):
    code, status = "ERR_GUARDRAIL_BLOCKED", 400
    hint = "the gateway's guardrails refuse this content; x-hybridfast-guardrails says which"


def _texts(request: PipelineRequest) -> list[str]:
    if isinstance(request, EmbeddingRequest):
        return [x for x in request.inputs if isinstance(x, str)]
    out: list[str] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
    return out


def _rewrite(request: PipelineRequest, change: Any) -> PipelineRequest:
    """The request with every text passed through `change`."""
    if isinstance(request, EmbeddingRequest):
        inputs: Any = [change(x) if isinstance(x, str) else x for x in request.inputs]
        return dataclasses.replace(request, inputs=inputs)
    messages = []
    for message in request.messages:
        message = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = change(content)
        elif isinstance(content, list):
            message["content"] = [
                {**p, "text": change(p["text"])}
                if isinstance(p, dict) and isinstance(p.get("text"), str)
                else p
                for p in content
            ]
        messages.append(message)
    return msgspec.structs.replace(request, messages=messages)


def _label(guardrail: Guardrail, action: str, findings: list[Finding]) -> str:
    kinds = ",".join(sorted({f.kind for f in findings}))
    return f"{guardrail.name}:{action}({kinds})"


def _report(ctx: RequestContext, label: str, action: str, name: str, where: str) -> None:
    TRIGGERED.inc((name, action, where))
    log.warning("request %s: guardrail %s on the %s", ctx.request_id, label, where)
    previous = ctx.response_headers.get(HEADER)
    ctx.response_headers[HEADER] = f"{previous}; {label}" if previous else label


class GuardrailHooks:
    def __init__(self, rules: list[tuple[Guardrail, str, bool]]) -> None:
        self.rules = rules  # (guardrail, action, check answers)

    async def check_request(
        self, ctx: RequestContext, request: PipelineRequest
    ) -> PipelineRequest | None:
        changed = False
        for guardrail, action, _ in self.rules:
            findings = [f for text in _texts(request) for f in guardrail.find(text)]
            if not findings:
                continue
            label = _label(guardrail, action, findings)
            _report(ctx, label, action, guardrail.name, "request")
            if action == "block":
                raise GuardrailBlocked(
                    f"guardrail {guardrail.name} refused the request",
                    headers={HEADER: ctx.response_headers[HEADER]},
                )
            if action == "mask":
                request = _rewrite(request, lambda text, g=guardrail: mask(text, g.find(text)))
                changed = True
        return request if changed else None

    async def check_answer(
        self, ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        if not isinstance(answer, ChatAnswer) or not isinstance(request, ChatRequest):
            return
        for guardrail, action, answers in self.rules:
            if not answers:
                continue
            findings = guardrail.find(answer.content)
            if not findings:
                continue
            if ctx.stream:
                # Already sent: it can only be reported.
                _report(
                    ctx,
                    _label(guardrail, "reported", findings),
                    "reported",
                    guardrail.name,
                    "answer",
                )
                continue
            _report(ctx, _label(guardrail, action, findings), action, guardrail.name, "answer")
            if action == "mask":
                answer.content = mask(answer.content, findings)
            elif action == "block":
                answer.content = ""
                answer.finish_reason = "content_filter"


def install(gateway: Gateway) -> None:
    configs = gateway.config.guardrails
    if not configs:
        return
    hooks = GuardrailHooks([(build(c), c.action, c.answers) for c in configs])
    # After the key's model check (5), before rate limits (10): a blocked request is bad
    # input and should not use up the caller's allowance.
    gateway.hooks.add("before_route", hooks.check_request, name="guardrails", order=8)
    if any(c.answers for c in configs):
        gateway.hooks.add("after_answer", hooks.check_answer, name="guardrails", order=-20)
