"""GET /v1/models: groups, routes, and the built-in local embedding models the config does
not shadow, in OpenAI's list shape (the official SDK reads it)."""

from __future__ import annotations

from typing import Any

from hybridfast.config import parse_config
from hybridfast.server.app import create_app


async def list_models(aiohttp_client: Any, text: str) -> dict[str, dict[str, Any]]:
    client = await aiohttp_client(create_app(parse_config(text).config))
    resp = await client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    return {m["id"]: m for m in body["data"]}


async def test_an_empty_config_offers_the_builtin_embedding_models(aiohttp_client: Any) -> None:
    models = await list_models(aiohttp_client, "ledger: {backend: memory}\n")
    assert set(models) == {"minilm", "hashing"}
    assert models["minilm"]["x_hybridfast"] == {"kind": "builtin", "capabilities": ["embeddings"]}


async def test_groups_routes_and_shadowed_builtins(aiohttp_client: Any) -> None:
    text = """
providers: [{name: o, kind: openai-compatible, base_url: "http://127.0.0.1:9/v1"}]
models:
  - {name: chat, provider: o, model: m1}
  - {name: chat, provider: o, model: m2}
  - {name: hashing, provider: o, model: my-own-hashing, capabilities: [embeddings]}
routes: {auto: {strategy: cost, candidates: [chat]}}
ledger: {backend: memory}
"""
    models = await list_models(aiohttp_client, text)
    assert set(models) == {"chat", "hashing", "auto", "minilm"}
    assert models["chat"]["x_hybridfast"] == {"kind": "group", "deployments": ["chat#0", "chat#1"]}
    assert models["hashing"]["x_hybridfast"]["kind"] == "group"  # the config's own, not built in
    assert models["auto"]["x_hybridfast"]["kind"] == "route"
