"""Edge validation: each endpoint's request schema (msgspec structs) and the OpenAPI
document generated from them.

To add an endpoint's schema: define its struct in a module here (validate the fields the
gateway reads or converts; leave the rest to pass through), call
`register("/v1/your/path", YourStruct, "summary")` at the bottom of that module, import the
module below, and call `validated_body("/v1/your/path", raw)` where the handler reads the
body. `tests/fuzz/` then fuzzes it and `/openapi.json` lists it with no further work.
"""

from hybridfast.validation import anthropic_messages, embeddings, openai_chat
from hybridfast.validation.openapi import document
from hybridfast.validation.schema import (
    MAX_DEPTH,
    SCHEMAS,
    EdgeSchema,
    InvalidParam,
    check_depth,
    register,
    validated_body,
)

__all__ = [
    "MAX_DEPTH",
    "SCHEMAS",
    "EdgeSchema",
    "InvalidParam",
    "anthropic_messages",
    "check_depth",
    "document",
    "embeddings",
    "openai_chat",
    "register",
    "validated_body",
]
