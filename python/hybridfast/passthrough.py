"""Same-protocol pass-through: when the client and the upstream speak the same API, the
upstream gets the client's own body, not a translation of it.

A client protocol adapter parses the body into the gateway's (OpenAI-shaped) `ChatRequest`
as always, and attaches the body it came from (`attach`). A provider of the same protocol
sends that body (`native_body`) with only what the gateway owns replaced (the model, the
stream flag); every other provider translates `ChatRequest` as before and never sees it
(`upstream_extra`).

The body is used only while the request's messages are still the ones parsed from it: a
hook that rewrote them (a guardrail's redaction) or a stream continued on another deployment
(the partial answer appended) makes a new list, and the provider translates that instead.
"""

from __future__ import annotations

from typing import Any

from hybridfast.types import ChatRequest

# The key in `ChatRequest.extra` (which reaches only providers and the cache key).
NATIVE = "_hybridfast_native"
# The gateway's own extension object in a client body (`x_hybridfast`: template variables):
# read by the gateway, never sent to an upstream, which would refuse an unknown field.
EXTENSION = "x_hybridfast"
# Fields of a client body that are the gateway's, not the upstream's.
GATEWAY_FIELDS = frozenset({"cache", "stream", "stream_options", EXTENSION})


def attach(
    request: ChatRequest,
    protocol: str,
    body: dict[str, Any],
    untranslatable: list[str] | None = None,
) -> ChatRequest:
    """Remembers `body` (as the client sent it) for a `protocol` upstream; `untranslatable`
    names what only such an upstream can serve (documents, server tools...)."""
    kept = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    native: dict[str, Any] = {"protocol": protocol, "body": kept, "messages": request.messages}
    if untranslatable:
        native["untranslatable"] = untranslatable
    request.extra[NATIVE] = native
    return request


def untranslatable(request: ChatRequest, upstream_protocol: str) -> str | None:
    """What an upstream speaking another protocol would lose (None: nothing), as a message
    for the client."""
    native = request.extra.get(NATIVE)
    if not isinstance(native, dict) or native.get("protocol") == upstream_protocol:
        return None
    lost = native.get("untranslatable")
    if not lost:
        return None
    return f"{', '.join(lost)} can be served only by a {native['protocol']} upstream"


def native_body(request: ChatRequest, protocol: str) -> dict[str, Any] | None:
    """The client's body when it spoke `protocol` and nothing rewrote its messages since."""
    native = request.extra.get(NATIVE)
    if not isinstance(native, dict) or native.get("protocol") != protocol:
        return None
    if native.get("messages") is not request.messages:
        return None
    body = native.get("body")
    return dict(body) if isinstance(body, dict) else None


def upstream_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` without the pass-through body and the gateway's extension (for providers
    that translate)."""
    if NATIVE not in extra and EXTENSION not in extra:
        return extra
    return {k: v for k, v in extra.items() if k != NATIVE and k != EXTENSION}
