"""What a cached answer is filed under.

- The exact key hashes everything that changes the answer: the model/route name, the
  messages, tools and tool choice, sampling parameters, response format, the other
  parameters passed upstream, and the tenant (unless the cache is shared). It leaves out
  what does not: `stream` (a stored answer replays as a stream), `include_usage`, `user`
  (an end-user id for the provider's abuse checks) and the cache control itself.
- The coarse scope (model + tenant) tags every entry so an operator can invalidate by
  model or tenant.
- The semantic scope is the partition of the vector index a lookup searches: the coarse
  scope plus the system prompt, tools, response format and sampling parameters — and, when
  only the last user message is embedded, the earlier turns verbatim, so "and in French?"
  is never matched across two different conversations.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, NamedTuple

import orjson

from hybridfast.config import CacheConfig
from hybridfast.types import Caller, ChatRequest

_DUMP = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _hash(obj: Any, size: int) -> bytes:
    return hashlib.blake2b(orjson.dumps(obj, option=_DUMP, default=str), digest_size=size).digest()


def _u64(obj: Any) -> int:
    return int.from_bytes(_hash(obj, 8), "little")


def tenant_of(caller: Caller, shared: bool) -> str:
    """The tenant whose entries a caller may see: its team, else its key ("" = nobody
    authenticated, or a shared cache)."""
    if shared:
        return ""
    if caller.team:
        return f"team:{caller.team}"
    if caller.key_name:
        return f"key:{caller.key_name}"
    return ""


class Policy(NamedTuple):
    lookup: bool
    store: bool


def policy(request: ChatRequest, config: CacheConfig) -> Policy:
    """Whether this request may be answered from the cache and whether its answer may be
    kept. `no-store` skips both, `no-cache` asks for a fresh answer (which is then kept);
    sampled (temperature > 0) requests are not cached unless the config says so."""
    if request.cache_control == "no-store":
        return Policy(False, False)
    deterministic = config.cache_nondeterministic or (
        request.temperature == 0
        if request.temperature is not None
        else config.unset_temperature_is_deterministic
    )
    n = request.extra.get("n")
    if not deterministic or (isinstance(n, int) and n > 1):
        return Policy(False, False)
    return Policy(request.cache_control != "no-cache", True)


def _params(request: ChatRequest) -> list[Any]:
    return [
        request.temperature,
        request.top_p,
        request.max_tokens,
        request.stop,
        request.response_format,
        request.tools,
        request.tool_choice,
        request.extra,
    ]


def exact_key(request: ChatRequest, tenant: str) -> bytes:
    """16 bytes (BLAKE2b): collisions are out of reach, and it is short in Redis."""
    return _hash(["x1", request.model, tenant, request.messages, _params(request)], 16)


def coarse_scope(model: str, tenant: str) -> int:
    return _u64(["c1", model, tenant])


def entry_id(key: bytes) -> int:
    """The semantic entry of a request shares its exact key's identity (a positive int63),
    so invalidating a key drops both."""
    return int.from_bytes(key[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def message_text(message: dict[str, Any]) -> str | None:
    """A message's text; None when it carries anything else (images, audio, tool calls),
    which a text embedding cannot judge."""
    content = message.get("content")
    if message.get("tool_calls"):
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    return None


class SemanticTarget(NamedTuple):
    text: str
    scope: int


def semantic_target(
    request: ChatRequest,
    tenant: str,
    mode: Literal["last_user", "conversation"],
) -> SemanticTarget | None:
    """The text to embed and the index partition to search, or None when the request
    cannot be matched by meaning (no final user text, non-text content)."""
    messages = request.messages
    if not messages or messages[-1].get("role") != "user":
        return None
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    base = ["s1", request.model, tenant, system, _params(request)]
    if mode == "last_user":
        text = message_text(messages[-1])
        scope = _u64([*base, turns[:-1]])
    else:
        texts = []
        for m in turns:
            t = message_text(m)
            if t is None:
                return None
            texts.append(f"{m.get('role')}: {t}")
        text = "\n".join(texts)
        scope = _u64(base)
    if not text or not text.strip():
        return None
    return SemanticTarget(text, scope)


class CacheTicket:
    """One request's cache decision and keys, computed once per request: whether it may be
    answered from the cache (`lookup`) and kept (`store`), its tenant, its exact key and its
    semantic target (each on first use), and the target's vector once embedded."""

    __slots__ = ("_key", "_target", "lookup", "request", "store", "tenant", "vector")

    def __init__(self, request: ChatRequest, caller: Caller, config: CacheConfig) -> None:
        decided = policy(request, config)
        self.request = request
        self.lookup = decided.lookup
        self.store = decided.store
        self.tenant = tenant_of(caller, config.shared)
        self._key: bytes | None = None
        self._target: SemanticTarget | bool | None = False  # False: not computed yet
        self.vector: Any = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = exact_key(self.request, self.tenant)
        return self._key

    def target(self, mode: Literal["last_user", "conversation"]) -> SemanticTarget | None:
        if self._target is False:
            self._target = semantic_target(self.request, self.tenant, mode)
        return self._target  # type: ignore[return-value]
