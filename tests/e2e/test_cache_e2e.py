"""The cache through real `serve` processes and the official SDKs: hits replayed as real
streams, tenants kept apart, admin invalidation, a restart that keeps the cache, and two
processes sharing one cache through the real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.server import RunningServer, free_port

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-cache-master"
KEYS = """keys:
  - {key: sk-alice, name: alice}
  - {key: sk-bob, name: bob}
"""


def client(server: RunningServer, key: str = "sk-alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def ask(
    server: RunningServer, text: str, key: str = "sk-alice", stream: bool = False
) -> tuple[str, str]:
    """(answer text, x-hybridfast-cache) for one temperature-0 request."""
    c = client(server, key)
    messages: Any = [{"role": "user", "content": text}]
    if not stream:
        raw = c.chat.completions.with_raw_response.create(
            model="chat", messages=messages, temperature=0
        )
        return raw.parse().choices[0].message.content or "", raw.headers["x-hybridfast-cache"]
    with c.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, temperature=0, stream=True
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        pieces = []
        chunks = 0
        for chunk in resp.parse():
            chunks += 1
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert chunks >= 2  # a real stream of chunks, not one blob
        return "".join(pieces), resp.headers["x-hybridfast-cache"]


def admin(server: RunningServer, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {MASTER}")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def cache_yaml(extra: str = "") -> str:
    return "cache:\n  semantic: {embedder: hashing, threshold: 0.8}\n" + extra + KEYS


def chat_requests(fake: FakeUpstream) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


def test_hits_replay_as_streams_and_stay_within_a_tenant(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    server = serve_gateway(
        fake_config(fake_openai, server=f"  master_key: {MASTER}", extra=cache_yaml())
    )
    assert ask(server, "How do I reverse a list in Python?") == (DEFAULT_REPLY, "miss")
    assert chat_requests(fake_openai) == 1
    # The same request, streamed: replayed from the cache as SSE chunks.
    assert ask(server, "How do I reverse a list in Python?", stream=True) == (DEFAULT_REPLY, "hit")
    # A rewording that changes nothing the embedder sees: semantic hit.
    assert ask(server, "how do I reverse a list in python") == (DEFAULT_REPLY, "semantic-hit")
    assert chat_requests(fake_openai) == 1
    # Another tenant never sees alice's entries.
    assert ask(server, "How do I reverse a list in Python?", key="sk-bob")[1] == "miss"
    assert chat_requests(fake_openai) == 2
    # A near-miss with another number goes upstream.
    ask(server, "What is 15% of 80?")
    assert ask(server, "What is 15% of 90?")[1] == "miss"

    stats = admin(server, "GET", "/admin/cache")
    assert stats["lookups"]["hit"] == 1
    assert stats["lookups"]["semantic-hit"] == 1
    req = urllib.request.Request(server.url + "/metrics")
    req.add_header("authorization", f"Bearer {MASTER}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'hybridfast_cache_lookups_total{result="semantic-hit"} 1.0' in metrics

    entries = admin(server, "GET", "/admin/cache/entries")["entries"]
    assert {e["tenant"] for e in entries} == {"key:alice", "key:bob"}
    assert admin(server, "POST", "/admin/cache/invalidate", {"key_name": "bob"})["invalidated"] >= 1
    assert ask(server, "How do I reverse a list in Python?", key="sk-bob")[1] == "miss"
    assert admin(server, "DELETE", "/admin/cache")["invalidated"] >= 1
    assert ask(server, "How do I reverse a list in Python?")[1] == "miss"


def test_restart_keeps_the_cache(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    text = fake_config(
        fake_openai,
        server=f"  master_key: {MASTER}",
        extra=cache_yaml(f"  snapshot_path: {tmp_path / 'cache'}\n"),
    )
    first = serve_gateway(text)
    assert ask(first, "Explain the plot of Hamlet")[1] == "miss"
    assert first.stop() == 0
    second = serve_gateway(text)
    assert ask(second, "Explain the plot of Hamlet", stream=True) == (DEFAULT_REPLY, "hit")
    assert ask(second, "explain the plot of hamlet")[1] == "semantic-hit"
    assert chat_requests(fake_openai) == 1


def test_restart_with_the_default_config_answers_from_the_cache(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    # Nothing about the cache in the config: the default ledger file in the working
    # directory, the snapshot beside it, the default embedder, guards and verifier.
    text = fake_config(fake_openai).replace("ledger:\n  backend: memory\n", "")
    assert "cache" not in text
    assert "ledger" not in text
    first = serve_gateway(text, workdir=tmp_path)
    assert ask(first, "Explain the plot of Hamlet")[1] == "miss"
    assert first.stop() == 0
    assert (tmp_path / "hybridfast-ledger-cache.json").exists()
    second = serve_gateway(text, workdir=tmp_path)
    assert ask(second, "Explain the plot of Hamlet", stream=True) == (DEFAULT_REPLY, "hit")
    assert ask(second, "Could you explain the plot of Hamlet?")[1] == "semantic-hit"
    assert chat_requests(fake_openai) == 1


def test_cache_cli_finds_the_gateway_through_its_config(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    port = free_port()
    text = fake_config(fake_openai, server=f"  master_key: {MASTER}\n  port: {port}", extra=KEYS)
    server = serve_gateway(text, port=port)
    ask(server, "What is the capital of Australia?")
    config = tmp_path / "hybridfast.yaml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDFAST_MASTER_KEY"}
    cli = [sys.executable, "-m", "hybridfast", "cache"]
    stats = subprocess.run(
        [*cli, "stats", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["lookups"]["miss"] == 1
    refused = subprocess.run(
        [*cli, "stats", "--config", str(config), "--master-key", "sk-not-it"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert refused.returncode == 2
    assert "ERR_UNAUTHORIZED" in refused.stderr
    assert "Traceback" not in refused.stderr
    cleared = subprocess.run(
        [*cli, "clear", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout)["invalidated"] >= 1


@pytest.mark.redis
def test_two_processes_share_one_cache_through_redis(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer]
) -> None:
    prefix = f"hybridfast-test:{uuid.uuid4().hex}"
    text = fake_config(
        fake_openai,
        server=f"  master_key: {MASTER}",
        extra=cache_yaml(f"  backend: redis\n  redis_prefix: {prefix}\n"),
    )
    a, b = serve_gateway(text), serve_gateway(text)
    try:
        assert ask(a, "What is the capital of Australia?")[1] == "miss"
        assert ask(b, "What is the capital of Australia?", stream=True) == (DEFAULT_REPLY, "hit")
        # The semantic entry reached b's local index through the Redis stream.
        deadline = time.monotonic() + 5
        while True:
            if ask(b, "what is the capital of australia")[1] == "semantic-hit":
                break
            assert time.monotonic() < deadline, "b never saw a's semantic entry"
            time.sleep(0.05)
        assert chat_requests(fake_openai) == 1
        # Invalidation on one process reaches the other.
        admin(b, "DELETE", "/admin/cache")
        time.sleep(0.3)
        assert ask(a, "What is the capital of Australia?")[1] == "miss"
        assert ask(a, "what is the capital of australia ")[1] in ("miss", "semantic-hit")
    finally:
        import redis

        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for name in r.scan_iter(match=f"{prefix}:*"):
            r.delete(name)
        r.close()
