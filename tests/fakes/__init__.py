"""Fake upstreams and a real-server helper for tests and benchmarks.

In-process: the `fake_openai`, `fake_anthropic` and `fake_ollama` fixtures (tests/conftest.py)
run a `FakeUpstream` on a background thread's event loop, so they answer both async tests
and a real `serve` subprocess driven from a blocking test.

As a process: `python -m tests.fakes --kind openai --port N` (see `__main__.py`).
A real gateway: `start_server(config_yaml)` in `tests.fakes.server`.
"""

from __future__ import annotations

from tests.fakes.background import BackgroundLoop, running_fake
from tests.fakes.upstream import DEFAULT_REPLY, FakeUpstream, Received, split_reply

__all__ = [
    "DEFAULT_REPLY",
    "BackgroundLoop",
    "FakeUpstream",
    "Received",
    "running_fake",
    "split_reply",
]
