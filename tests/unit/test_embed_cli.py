"""`hybridfast embed FILE|-`: JSON lines in input order, ids carried, progress on stderr."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from hybridfast.cli import main
from hybridfast.embeddings.local import load_embedder


class Stdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def write(self, text: str) -> int:
        return self.buffer.write(text.encode())

    def flush(self) -> None:
        pass


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str | None = None) -> list[Any]:
    out = Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["embed", *argv]) == 0
    return [orjson.loads(line) for line in out.buffer.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HYBRIDFAST_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hybridfast.yaml").write_text("ledger: {backend: memory}\n")


def test_embeds_a_file_in_order_with_progress(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [f"line {i} of the input" for i in range(23)]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(texts[:10]) + "\n\n" + "\n".join(texts[10:]) + "\n")
    rows = run_cli(monkeypatch, str(path), "--batch", "5")
    assert [r["index"] for r in rows] == list(range(23))
    want = load_embedder("minilm").embed(texts)
    np.testing.assert_allclose([r["embedding"] for r in rows], want, atol=1e-6)
    assert "23/23" in capsys.readouterr().err


def test_jsonl_from_stdin_keeps_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = '{"text": "alpha", "id": "a-1"}\n{"text": "beta", "id": 2}\n'
    rows = run_cli(monkeypatch, "-", "--jsonl", "--model", "hashing", "--no-progress", stdin=stdin)
    assert [(r["index"], r["id"]) for r in rows] == [(0, "a-1"), (1, 2)]
    assert len(rows[0]["embedding"]) == 384


def test_errors_are_one_line_with_a_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["embed", str(tmp_path / "missing.txt")]) == 2
    assert "ERR_INVALID_REQUEST" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json\n"))
    assert main(["embed", "-", "--jsonl"]) == 2
    assert "line 1" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    assert main(["embed", "-", "--model", "nope"]) == 2
    assert "ERR_MODEL_NOT_FOUND" in capsys.readouterr().err


def test_builtin_models_are_listed_unless_shadowed() -> None:
    from hybridfast.config import parse_config
    from hybridfast.embeddings import builtin_models
    from hybridfast.embeddings.local import LOCAL_MODELS

    assert builtin_models(parse_config("").config) == list(LOCAL_MODELS)
    shadowed = parse_config(
        "providers: [{name: o, kind: ollama, base_url: 'http://127.0.0.1:1'}]\n"
        "models: [{name: minilm, provider: o, model: all-minilm}]\n"
    ).config
    assert builtin_models(shadowed) == ["hashing"]
