"""What the ledger records for real wire-format answers: each provider's usage shape (cached,
cache-write tokens) costs exactly the hand-computed amount, streamed or not; an upstream that
reports no usage is costed from a token count and marked estimated."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hybridfast.config import parse_config
from hybridfast.server.app import create_app, gateway_key, opening_key
from tests.conftest import fake_config
from tests.fakes.upstream import FakeUpstream

PRICE = "    price: {input_per_mtok: 1, output_per_mtok: 2}"
OWN_PRICE = (
    "    price: {input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3, "
    "cache_write_per_mtok: 3.75}"
)


def _app_config(fake: FakeUpstream, tmp_path: Path) -> Any:
    text = fake_config(fake).replace(PRICE, OWN_PRICE)
    assert OWN_PRICE in text
    text = text.replace(
        "ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {tmp_path}/l.db\n"
    )
    return parse_config(text).config


async def _ask(client: Any, kind: str, stream: bool, i: int) -> str:
    messages = [{"role": "user", "content": f"question {i}"}]
    if kind == "anthropic":
        path = "/v1/messages"
        body: dict[str, Any] = {"model": "chat", "messages": messages, "max_tokens": 300}
    else:
        path = "/v1/chat/completions"
        body = {"model": "chat", "messages": messages, "max_tokens": 300}
    body["stream"] = stream
    resp = await client.post(path, json=body)
    assert resp.status == 200, await resp.text()
    await resp.read()
    return str(resp.headers["x-hybridfast-request-id"])


def _entries(client: Any) -> dict[str, dict[str, Any]]:
    store = client.app[gateway_key].ledger.store
    return {e["request_id"]: e for e in store.export(None, None)}


@pytest.mark.parametrize(
    ("kind", "expected_picodollars", "cached", "written"),
    [
        # 400 plain × $3 + 600 cached × $0.30 + 200 out × $15 per Mtok (OpenAI reports no
        # cache writes) = $0.00438.
        ("openai", 4_380_000_000, 600, 0),
        # 300 plain × $3 + 600 read × $0.30 + 100 written × $3.75 + 200 out × $15 = $0.004455.
        ("anthropic", 4_455_000_000, 600, 100),
    ],
)
async def test_usage_shapes_cost_the_same_streamed_or_not(
    aiohttp_client: Any,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
    expected_picodollars: int,
    cached: int,
    written: int,
) -> None:
    fake: FakeUpstream = request.getfixturevalue(f"fake_{kind}")
    fake.switches.usage = {"input": 1000, "output": 200, "cached": 600, "cache_write": 100}
    client = await aiohttp_client(create_app(_app_config(fake, tmp_path)))
    await client.app[opening_key]
    whole = await _ask(client, kind, False, 1)
    streamed = await _ask(client, kind, True, 2)
    entries = _entries(client)
    for rid in (whole, streamed):
        e = entries[rid]
        assert e["cost"] == expected_picodollars, (rid, e)
        assert (e["input_tokens"], e["output_tokens"]) == (1000, 200)
        assert (e["cached_input_tokens"], e["cache_write_tokens"]) == (cached, written)
        assert e["estimated"] == 0
    await client.close()


async def test_no_usage_is_estimated_and_marked(
    aiohttp_client: Any, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    fake_openai.switches.no_usage = True
    client = await aiohttp_client(create_app(_app_config(fake_openai, tmp_path)))
    await client.app[opening_key]
    rids = [await _ask(client, "openai", stream, i) for i, stream in enumerate((False, True))]
    entries = _entries(client)
    costs = [entries[r]["cost"] for r in rids]
    assert all(entries[r]["estimated"] == 1 for r in rids)
    assert all(entries[r]["output_tokens"] > 0 for r in rids)
    # The same prompt length and reply: the same estimate whichever way it was sent.
    assert costs[0] == costs[1] > 0
    (row,) = client.app[gateway_key].ledger.books.report("total")
    assert row[4] == 2  # both counted as estimated in the aggregates
    assert Decimal(row[-2]) == sum(costs)
    await client.close()
