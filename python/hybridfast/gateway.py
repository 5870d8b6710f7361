"""The older import path of the pipeline: use `hybridfast.pipeline.gateway` (the `Gateway`)
and `hybridfast.pipeline.context` (`RequestContext`, formerly `CallInfo`)."""

from __future__ import annotations

from hybridfast.errors import to_gateway_error
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import ChatResult, ChatStream, Gateway
from hybridfast.pipeline.recovery import CONTINUE_PROMPT
from hybridfast.types import ANONYMOUS

CallInfo = RequestContext

__all__ = [
    "ANONYMOUS",
    "CONTINUE_PROMPT",
    "CallInfo",
    "ChatResult",
    "ChatStream",
    "Gateway",
    "to_gateway_error",
]
