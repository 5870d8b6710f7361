"""Cache snapshots on disk, all or nothing.

A snapshot is a manifest (`<prefix>.json`) naming its parts — the exact table, and with a
semantic index its payload table and vector index — with each part's size and SHA-256. Parts
of one save share a generation in their file names, and the manifest is replaced last, so a
crash mid-save leaves the previous snapshot whole. A load checks every part against the
manifest before it reads any: a missing, truncated or damaged part means a loud warning and
an empty cache, never half a cache (vectors without answers, or answers no lookup can find).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridfast._core import ExactTable, StorageError, VectorIndex
from hybridfast.config import CacheConfig, Config

log = logging.getLogger("hybridfast.cache")

FORMAT = 2
_CHUNK = 1 << 20
_PART_SUFFIXES = frozenset({".exact", ".semantic", ".index"})


class SnapshotDamaged(Exception):
    """A snapshot that cannot be loaded whole."""


@dataclass
class Loaded:
    exact: ExactTable
    scopes: dict[int, tuple[str, str]]
    # The semantic half: (vector index, payload table), or None when the snapshot has none
    # or was made with another embedder.
    semantic: tuple[VectorIndex, ExactTable] | None


def resolve_path(config: Config) -> str | None:
    """`cache.snapshot_path` as a files prefix: `auto` puts the snapshot next to the SQLite
    ledger (`<dir>/<ledger stem>-cache.*`), so the cache survives a restart as the ledger
    does; with a PostgreSQL or in-memory ledger, or the Redis cache backend (which shares
    its entries through Redis), `auto` means no snapshot. A path: there. `null`: none."""
    path = config.cache.snapshot_path
    if path != "auto":
        return path
    if config.cache.backend != "memory" or config.ledger.backend != "sqlite":
        return None
    ledger = Path(config.ledger.path)
    return str(ledger.with_name(f"{ledger.stem}-cache"))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _describe(path: Path) -> dict[str, Any]:
    return {"file": path.name, "size": path.stat().st_size, "sha256": _digest(path)}


def save(
    prefix: str,
    exact: ExactTable,
    semantic: tuple[VectorIndex, ExactTable, list[Any]] | None,
    scopes: dict[int, tuple[str, str]],
) -> None:
    """Writes a new generation of parts, then the manifest naming them, then removes the
    previous generation. `semantic` is (index, payloads, [embedder name, dimensions])."""
    manifest_path = Path(f"{prefix}.json")
    empty = len(exact) == 0 and (semantic is None or len(semantic[1]) == 0)
    if empty and not manifest_path.exists():
        return  # nothing to keep, and no older snapshot to supersede: leave no files
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    previous = _listed_files(manifest_path)
    generation = f"{time.time_ns():x}"
    parts: dict[str, Path] = {"exact": Path(f"{prefix}.{generation}.exact")}
    exact.save(str(parts["exact"]))
    embedder = None
    if semantic is not None:
        index, payloads, embedder = semantic
        parts["semantic"] = Path(f"{prefix}.{generation}.semantic")
        parts["index"] = Path(f"{prefix}.{generation}.index")
        payloads.save(str(parts["semantic"]))
        index.save(str(parts["index"]))
    manifest = {
        "version": FORMAT,
        "generation": generation,
        "parts": {name: _describe(p) for name, p in parts.items()},
        "scopes": {str(k): list(v) for k, v in scopes.items()},
        "embedder": embedder,
    }
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)
    keep = {p.name for p in parts.values()}
    for name in previous - keep:
        (manifest_path.parent / name).unlink(missing_ok=True)


def _listed_files(manifest_path: Path) -> set[str]:
    try:
        meta = json.loads(manifest_path.read_text())
        return {str(part["file"]) for part in meta.get("parts", {}).values()}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return set()


def load(prefix: str, cfg: CacheConfig, embedder: list[Any] | None) -> Loaded | None:
    """The snapshot at `prefix`, whole; None when there is none. Raises `SnapshotDamaged`
    when any part is missing or does not match the manifest (nothing is half-loaded)."""
    manifest_path = Path(f"{prefix}.json")
    if not manifest_path.exists():
        strays = sorted(
            p.name
            for p in manifest_path.parent.glob(f"{Path(prefix).name}.*")
            if p.suffix in _PART_SUFFIXES
        )
        if strays:
            raise SnapshotDamaged(f"parts without a manifest ({', '.join(strays[:4])})")
        return None
    try:
        meta = json.loads(manifest_path.read_text())
        scopes = {int(k): (str(v[0]), str(v[1])) for k, v in meta["scopes"].items()}
        parts = _checked_parts(manifest_path, meta)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SnapshotDamaged(f"manifest {manifest_path}: {exc}") from None
    try:
        exact = ExactTable.load(str(parts["exact"]), cfg.exact.max_entries)
        semantic = None
        if embedder is not None and "index" in parts and meta.get("embedder") == embedder:
            index = VectorIndex.load(str(parts["index"]))
            payloads = ExactTable.load(str(parts["semantic"]), cfg.semantic.max_entries)
            semantic = (index, payloads)
        elif embedder is not None and "index" in parts:
            log.info(
                "cache: semantic snapshot made with embedder %s, now %s: not loaded",
                meta.get("embedder"),
                embedder,
            )
    except (StorageError, OSError, ValueError) as exc:
        raise SnapshotDamaged(str(exc)) from None
    return Loaded(exact, scopes, semantic)


def _checked_parts(manifest_path: Path, meta: dict[str, Any]) -> dict[str, Path]:
    if meta.get("version") != FORMAT:
        raise ValueError(f"format {meta.get('version')!r}, this version reads {FORMAT}")
    listed: dict[str, Any] = meta["parts"]
    if "exact" not in listed or ("index" in listed) != ("semantic" in listed):
        raise ValueError(f"incomplete part list {sorted(listed)}")
    parts: dict[str, Path] = {}
    for name, part in listed.items():
        path = manifest_path.parent / str(part["file"])
        if not path.exists():
            raise ValueError(f"part {name} ({path.name}) is missing")
        if path.stat().st_size != part["size"] or _digest(path) != part["sha256"]:
            raise ValueError(f"part {name} ({path.name}) is damaged")
        parts[name] = path
    return parts
