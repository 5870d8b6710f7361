"""Cache snapshots: kept beside the ledger by default, loaded whole or not at all."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from hybridfast.cache import open_cache, snapshot
from hybridfast.cache.core import MemoryCache
from hybridfast.config import Config, parse_config
from hybridfast.types import Caller, ChatAnswer, ChatRequest

ALICE = Caller(key_name="alice")
QUESTION = "How do I reverse a list in Python?"


def config(yaml: str) -> Config:
    return parse_config("cache:\n  semantic: {embedder: hashing, threshold: 0.8}\n" + yaml).config


def req(text: str) -> ChatRequest:
    return ChatRequest(model="m", messages=[{"role": "user", "content": text}], temperature=0)


async def filled(cfg: Config) -> None:
    cache = await open_cache(cfg)
    await cache.store(req(QUESTION), ALICE, ChatAnswer(content="reversed()", cost=7))
    await cache.close()


def manifest(prefix: Path) -> dict[str, dict[str, str]]:
    return json.loads(prefix.with_name(prefix.name + ".json").read_text())["parts"]  # type: ignore[no-any-return]


def test_auto_puts_the_snapshot_beside_the_sqlite_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "data" / "books.db"
    cfg = parse_config(f"ledger: {{path: {ledger}}}").config
    assert cfg.cache.snapshot_path == "auto"
    assert snapshot.resolve_path(cfg) == str(tmp_path / "data" / "books-cache")
    assert snapshot.resolve_path(parse_config("ledger: {backend: memory}").config) is None
    assert snapshot.resolve_path(parse_config("cache: {snapshot_path: null}").config) is None
    assert snapshot.resolve_path(parse_config("cache: {backend: redis}").config) is None
    redis_with_path = parse_config(f"cache: {{backend: redis, snapshot_path: {tmp_path}/r}}")
    assert snapshot.resolve_path(redis_with_path.config) == f"{tmp_path}/r"
    explicit = parse_config(f"cache: {{snapshot_path: {tmp_path / 'c'}}}").config
    assert snapshot.resolve_path(explicit) == str(tmp_path / "c")


async def test_default_config_survives_a_restart(tmp_path: Path) -> None:
    cfg = config(f"ledger:\n  path: {tmp_path / 'hybridfast-ledger.db'}\n")
    await filled(cfg)
    assert (tmp_path / "hybridfast-ledger-cache.json").exists()
    again = await open_cache(cfg)
    hit = await again.lookup(req(QUESTION), ALICE)
    assert hit is not None
    assert hit.answer.content == "reversed()"
    assert hit.answer.cost == 7
    semantic = await again.lookup(req("how do I reverse a list in python"), ALICE)
    assert semantic is not None
    assert semantic.kind == "semantic-hit"
    await again.close()


async def test_an_empty_cache_leaves_no_files(tmp_path: Path) -> None:
    cache = await open_cache(config(f"  snapshot_path: {tmp_path / 'c'}\n"))
    await cache.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("part", ["index", "semantic", "exact"])
@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
async def test_a_missing_or_damaged_part_loads_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, part: str, damage: str
) -> None:
    prefix = tmp_path / "cache"
    cfg = config(f"  snapshot_path: {prefix}\n")
    await filled(cfg)
    path = tmp_path / manifest(prefix)[part]["file"]
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1])
    else:
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, "hybridfast.cache"):
        again = await open_cache(cfg)
    assert "NOT loaded" in caplog.text
    assert part in caplog.text
    # Nothing at all: not the exact half without the semantic one, nor the reverse.
    assert len(again.exact) == 0
    assert again.semantic is not None
    assert len(again.semantic) == 0
    assert len(again.semantic.index) == 0
    assert again.scopes == {}
    assert await again.lookup(req(QUESTION), ALICE) is None
    await again.close()


async def test_parts_without_a_manifest_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = tmp_path / "cache"
    cfg = config(f"  snapshot_path: {prefix}\n")
    await filled(cfg)
    (tmp_path / "cache.json").unlink()
    with caplog.at_level(logging.WARNING, "hybridfast.cache"):
        again = await open_cache(cfg)
    assert "without a manifest" in caplog.text
    assert len(again.exact) == 0
    await again.close()


async def test_a_save_cut_short_leaves_the_previous_snapshot_whole(tmp_path: Path) -> None:
    prefix = tmp_path / "cache"
    cfg = config(f"  snapshot_path: {prefix}\n")
    await filled(cfg)
    before = manifest(prefix)
    # A later save that died after writing one part of its generation, before the manifest.
    (tmp_path / "cache.ffffffffffffffff.exact").write_bytes(b"half a save")
    again = MemoryCache(cfg)
    assert again.load_snapshot() == 2
    assert manifest(prefix) == before
    # The next save supersedes the old generation and removes its parts.
    again.save_snapshot()
    after = manifest(prefix)
    assert {p["file"] for p in after.values()}.isdisjoint({p["file"] for p in before.values()})
    assert not any((tmp_path / p["file"]).exists() for p in before.values())


async def test_an_older_format_is_not_half_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = tmp_path / "cache"
    (tmp_path / "cache.json").write_text(json.dumps({"version": 1, "scopes": {}}))
    with caplog.at_level(logging.WARNING, "hybridfast.cache"):
        cache = await open_cache(config(f"  snapshot_path: {prefix}\n"))
    assert "NOT loaded" in caplog.text
    assert len(cache.exact) == 0
    await cache.close()
