"""`cache eval` and the verifier: labelled pairs through the decision `serve` makes, the
error-bound table, and the CLI's admin calls (config address and key, error codes, a closed
pipe)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from hybridfast._core import HashingEmbedder
from hybridfast.cache import verifier as V
from hybridfast.cache.evaluate import Pair, evaluate, load_pairs
from hybridfast.cache.semantic import SemanticIndex
from hybridfast.cli import main
from hybridfast.config import parse_config
from hybridfast.embeddings.local import load_embedder, minilm_dir
from hybridfast.errors import InvalidRequest


def semantic(yaml: str = "") -> SemanticIndex:
    cfg = parse_config("cache:\n  semantic: {embedder: hashing, threshold: 0.8" + yaml + "}\n")
    return SemanticIndex(cfg.config.cache.semantic, HashingEmbedder(384))


def minilm_available() -> bool:
    try:
        return minilm_dir().exists()
    except Exception:
        return False


needs_minilm = pytest.mark.skipif(not minilm_available(), reason="minilm not installed")


# -- pairs files ----------------------------------------------------------------------------


def test_pairs_files_in_every_format(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"a": "x one", "b": "x two", "duplicate": true}\n\n'
        '{"id": 1, "stored": "s", "paraphrase": "p", "near_miss": "n", "kind": "numbers"}\n'
    )
    assert load_pairs(jsonl) == [
        Pair("x one", "x two", True),
        Pair("s", "p", True),
        Pair("s", "n", False),
    ]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("question1\tquestion2\tis_duplicate\nq a\tq b\t1\nq c\tq d\tfalse\n")
    assert load_pairs(tsv) == [Pair("q a", "q b", True), Pair("q c", "q d", False)]


@pytest.mark.parametrize(
    "line",
    [
        '{"a": "x", "b": "y"}',
        '{"a": "x", "b": "y", "duplicate": "yes"}',
        '{"a": "", "b": "y", "duplicate": true}',
        "[1, 2]",
        "{not json",
        "a\tb",
    ],
)
def test_a_bad_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "x", "b": "y", "duplicate": true}\n' + line + "\n")
    with pytest.raises(InvalidRequest, match=r"bad.jsonl:2"):
        load_pairs(path)


def test_an_empty_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidRequest, match="no pairs"):
        load_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(InvalidRequest, match="cannot read"):
        load_pairs(tmp_path / "nope.jsonl")


# -- counting -------------------------------------------------------------------------------


def test_correct_wrong_and_false_hits_are_counted_apart() -> None:
    pairs = [
        # Found through the index: a correct hit.
        Pair("How do I reverse a list in Python?", "how do I reverse a list in python", True),
        # A near-miss the numbers guard refuses: no false hit.
        Pair("What is 15% of 80?", "What is 15% of 90?", False),
        # A "non-duplicate" that asks one stored text word for word: not a false hit.
        Pair("Tell me a joke", "how do I reverse a list in python", False),
        # A non-duplicate served anyway (nothing tells these apart for the hashing embedder).
        Pair("Describe the colour of the sky", "describe the colour of the sky at noon", False),
        # A duplicate answered with another pair's entry: a wrong answer.
        Pair("What is the weather like?", "how do I reverse a list in Python", True),
    ]
    scores = evaluate(semantic(", max_error_rate: null"), pairs)
    assert (scores.duplicates, scores.non_duplicates) == (2, 3)
    assert (scores.correct, scores.wrong, scores.false) == (1, 1, 1)
    assert scores.as_dict()["false_hit_rate"] == round(1 / 3, 4)


# -- the verifier and its error bound --------------------------------------------------------


def test_the_error_bound_table_is_monotone_and_strict_between_entries() -> None:
    model = V.MINILM
    rates = [r for r, _ in model.thresholds]
    assert rates == sorted(rates)
    thresholds = [model.threshold_for(r) for r in rates]
    assert thresholds == sorted(thresholds, reverse=True)
    # Between two calibrated bounds, the stricter one's threshold applies.
    assert model.threshold_for(0.015) == model.threshold_for(0.01)
    # Below every calibrated bound nothing is served.
    assert model.threshold_for(0.001) == 1.0


DEFAULT_BOUND = 0.01  # cache.semantic.max_error_rate's default


def test_the_verifier_weighs_shared_words_against_the_cosine() -> None:
    verifier = V.Verifier(V.MINILM, DEFAULT_BOUND)
    same_words = ("What's the way to reverse a Python list?", "How do I reverse a list in Python?")
    other_word = ("How do I learn Python quickly?", "How do I learn Java quickly?")
    assert verifier.accepts(*same_words, cosine=0.90)
    # The same cosine is not enough when a content word changed.
    assert not verifier.accepts(*other_word, cosine=0.90)
    assert verifier.probability(*other_word, cosine=0.90) < verifier.probability(
        *same_words, cosine=0.90
    )
    assert verifier.accepts("same text", "same text", cosine=0.5)


def test_the_verifier_weighs_the_cosine_by_kind_of_query() -> None:
    """Every content word shared at cosine 0.95: a short question is served; a long sentence
    is not (between news sentences, one differing detail keeps the cosine that high)."""
    verifier = V.Verifier(V.MINILM, DEFAULT_BOUND)
    question = ("How can I reverse a Python list?", "How do I reverse a list in Python?")
    sentence = (
        "The company reported that its quarterly profit rose sharply on strong sales.",
        "Its quarterly profit rose sharply on strong sales, the company reported.",
    )
    assert verifier.accepts(*question, cosine=0.95)
    assert not verifier.accepts(*sentence, cosine=0.95)
    assert verifier.probability(*sentence, cosine=0.99) > verifier.probability(
        *sentence, cosine=0.95
    )


def test_the_verifier_remembers_no_long_prompt() -> None:
    """Its per-text cache holds short texts only: thousands of distinct long prompts that
    reach the verifier must not stay in memory."""
    verifier = V.Verifier(V.MINILM, 0.02)
    before = V._content_words.cache_info().currsize
    long_prompt = "Please summarise this report. " + "word " * 5000 + "?"
    verifier.probability(long_prompt, long_prompt + " again", cosine=0.95)
    assert V._content_words.cache_info().currsize == before
    assert V.query_kind(long_prompt)[0] == 1.0  # the end of a long text still counts


@needs_minilm
def test_the_default_serves_short_rewordings_and_refuses_near_misses() -> None:
    """Through the index `serve` builds, at the default bound: short questions reworded are
    answered (the verifier once refused every question under seven words, whatever its
    cosine), and a changed verb is not (each at its real cosine)."""
    stored = [
        "What is the capital of France?",
        "How do I remove duplicates from a list in Python?",
        "What year did the Berlin Wall fall?",
    ]
    pairs = [
        Pair(stored[0], "What's the capital of France?", True),
        Pair(stored[1], "How do I find duplicates in a list in Python?", False),
        Pair(stored[2], "What year was the Berlin Wall built?", False),
    ]
    index = SemanticIndex(parse_config("").config.cache.semantic, load_embedder("minilm"))
    scores = evaluate(index, pairs)
    assert (scores.correct, scores.wrong, scores.false) == (1, 0, 0)


def test_verifier_is_on_for_minilm_by_default_and_switchable() -> None:
    assert V.verifier_for("minilm", 0.02) is not None
    assert V.verifier_for("minilm", None) is None
    assert V.verifier_for("hashing", 0.02) is None  # nothing calibrated for it
    assert parse_config("").config.cache.semantic.max_error_rate == DEFAULT_BOUND


@needs_minilm
def test_minilm_index_uses_the_calibrated_floor_and_reports_it() -> None:
    cfg = parse_config("").config.cache.semantic
    index = SemanticIndex(cfg, load_embedder("minilm"))
    assert index.verifier is not None
    assert index.threshold == V.MINILM.floor
    assert index.stats()["verifier_threshold"] == V.MINILM.threshold_for(DEFAULT_BOUND)


# -- the CLI ----------------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@needs_minilm
def test_eval_without_a_file_uses_the_shipped_set_at_the_serve_default(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no hybridfast.yaml here: serve's defaults
    monkeypatch.delenv("HYBRIDFAST_CONFIG", raising=False)
    code, out, err = run_cli(["cache", "eval"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["file"].endswith("(shipped)")
    assert report["pairs"] == 308
    assert report["max_error_rate"] == DEFAULT_BOUND
    assert report["guards"] == list(parse_config("").config.cache.semantic.guards)
    assert report["false_hit_rate"] == 0.0
    assert report["wrong_answer_rate"] == 0.0
    assert report["correct_hit_rate"] >= 0.5  # 58% when calibrated


@needs_minilm
def test_eval_follows_the_config_serve_reads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "hybridfast.yaml"
    config.write_text("cache:\n  semantic: {max_error_rate: 0.05, guards: [numbers]}\n")
    code, out, _ = run_cli(["cache", "eval", "--config", str(config)], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["verifier_threshold"] == V.MINILM.threshold_for(0.05)
    assert report["guards"] == ["numbers"]


@pytest.mark.parametrize(
    "args",
    [
        ["--max-error-rate", "lots"],
        ["--max-error-rate", "1.5"],
        ["--threshold", "2"],
        ["--guards", "numbers,vibes"],
        ["--embedder", "no-such-model"],
    ],
)
def test_eval_rejects_bad_options_without_a_traceback(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, _, err = run_cli(["cache", "eval", *args], capsys)
    assert code == 2
    assert err.startswith("error ERR_")
    assert "Traceback" not in err


class _Admin(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("authorization"))
        if self.headers.get("authorization") != "Bearer sk-right":
            body = {"error": {"code": "ERR_UNAUTHORIZED", "message": "not an admin key"}}
            self.send_response(401)
        else:
            body = {"backend": "memory", "lookups": {"hit": 3}}
            self.send_response(200)
        raw = json.dumps(body).encode()
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Admin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_stats_reads_port_and_master_key_from_the_config(
    admin_server: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HYBRIDFAST_MASTER_KEY", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{host: 0.0.0.0, port: {admin_server}, master_key: sk-right}}\n")
    code, out, err = run_cli(["cache", "stats", "--config", str(config)], capsys)
    assert code == 0, err
    assert json.loads(out)["lookups"] == {"hit": 3}
    assert _Admin.seen[-1] == "Bearer sk-right"


def test_a_refused_key_is_unauthorized_not_internal(
    admin_server: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HYBRIDFAST_MASTER_KEY", "sk-wrong")
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{port: {admin_server}}}\n")
    code, _, err = run_cli(["cache", "stats", "--config", str(config)], capsys)
    assert code == 2
    assert "ERR_UNAUTHORIZED" in err
    assert "ERR_INTERNAL" not in err
    assert "sk-wrong" not in err
    assert "hint:" in err


def test_a_closed_pipe_is_a_clean_exit(tmp_path: Path) -> None:
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"a": "x one", "b": "x two", "duplicate": true}\n')
    cmd = [sys.executable, "-m", "hybridfast", "cache", "eval", str(pairs)]
    cmd += ["--embedder", "hashing"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, err
    assert "Traceback" not in err
    assert "BrokenPipe" not in err
