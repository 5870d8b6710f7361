"""`reverse` (`hybridfast.providers`): a provider that answers on this machine, with the
last user message's words in reverse order. It shows the provider interface end to end
(a whole answer, a stream, usage) without an upstream to run.

    models:
      - {name: mirror, provider: reverse, model: reverse-1}

With `options: {fail: true}` (on a `kind: plugin` provider entry) every call raises, to show
that a failing provider plugin is isolated: the request falls back to the next deployment.

This module imports hybridfast (for the answer types), which is always there when the
gateway loads the plugin; the package itself does not declare it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from hybridfast.config import ProviderConfig
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, StreamEvent, Usage

__all__ = ["ReverseProvider"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class ReverseProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.fail = bool(config.options.get("fail", False))
        self.prefix = str(config.options.get("prefix", ""))

    def _answer(self, request: ChatRequest) -> tuple[list[str], Usage]:
        if self.fail:
            raise RuntimeError(f"{self.name}: told to fail (options.fail)")
        prompt = [_text(m.get("content")) for m in request.messages]
        users = [m for m in request.messages if m.get("role") == "user"]
        last = _text(users[-1].get("content")) if users else ""
        words = ([self.prefix] if self.prefix else []) + last.split()[::-1]
        if request.max_tokens is not None:
            words = words[: request.max_tokens]
        # One token per word: a plain, reproducible count for the ledger.
        usage = Usage(input_tokens=sum(len(p.split()) for p in prompt), output_tokens=len(words))
        return words, usage

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        words, usage = self._answer(request)
        return ChatAnswer(content=" ".join(words), usage=usage, model=deployment.model)

    async def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncIterator[list[StreamEvent]]:
        words, usage = self._answer(request)
        # A batch per word, as an upstream's network reads would arrive.
        for i, word in enumerate(words):
            yield [StreamEvent(word if i == 0 else " " + word)]
        yield [StreamEvent(finish_reason="stop", usage=usage)]

    async def close(self) -> None:
        pass  # nothing held: no connections
