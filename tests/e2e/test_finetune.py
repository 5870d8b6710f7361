"""Fine-tuning data through a real serve and the CLI: Responses conversations stored by the
gateway, judged with POST /v1/feedback, exported by `hybridfast finetune export` as valid
OpenAI fine-tuning JSONL (only the ones that passed the filter); `finetune candidates` finds
the route whose answers come from the dearer deployment, with the figures."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

MASTER = "mk-finetune-0123456789abcdef"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridfast", "finetune", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_fine_tuning_format(example: dict[str, Any]) -> None:
    """OpenAI's chat fine-tuning format: one `messages` list of role/content messages,
    text content, ending with the assistant's answer."""
    assert set(example) == {"messages"}
    messages = example["messages"]
    assert messages
    for m in messages:
        assert m["role"] in ("system", "user", "assistant", "tool")
        assert isinstance(m["content"], str) or (m["role"] == "assistant" and m["tool_calls"])
    assert messages[-1]["role"] == "assistant"


def test_export_writes_only_liked_conversations_as_fine_tuning_jsonl(
    fake_openai: FakeUpstream, serve_gateway: Callable[..., RunningServer], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    text = fake_config(fake_openai, server=f"  master_key: {MASTER}")
    config = text.replace("  backend: memory", f"  backend: sqlite\n  path: {db}")
    config_path = tmp_path / "hybridfast.yaml"
    config_path.write_text(config)
    server = serve_gateway(config)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER, max_retries=0)
    verdicts = {"liked question": 1, "disliked question": 0, "unjudged question": None}
    ids = {}
    for question, verdict in verdicts.items():
        response = client.responses.create(
            model="chat", instructions="Answer briefly.", input=question
        )
        ids[question] = response.id
        if verdict is not None:
            fb = httpx.post(
                server.url + "/v1/feedback",
                headers={"Authorization": f"Bearer {MASTER}"},
                json={"episode_id": response.id, "metric": "thumbs_up", "value": verdict},
            )
            assert fb.status_code == 201, fb.text
    server.stop()

    out = tmp_path / "train.jsonl"
    result = _cli(
        "export",
        "--config",
        str(config_path),
        "--metric",
        "thumbs_up",
        "--min",
        "1",
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "1 examples written; 2 below the feedback filter" in result.stderr
    (line,) = out.read_text().splitlines()
    example = orjson.loads(line)
    _assert_fine_tuning_format(example)
    assert example["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "liked question"},
        {"role": "assistant", "content": fake_openai.reply},
    ]
    # Without a filter, every stored conversation.
    everything = _cli("export", "--config", str(config_path))
    lines = everything.stdout.splitlines()
    assert len(lines) == 3
    for raw in lines:
        _assert_fine_tuning_format(orjson.loads(raw))


def test_candidates_name_the_dearer_deployment_with_figures(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    text = fake_config(fake_openai, fake_anthropic, server=f"  master_key: {MASTER}")
    # p0 at 10x p1's prices and of higher quality; a route by quality sends it everything.
    text = (
        text.replace(
            "price: {input_per_mtok: 1, output_per_mtok: 2}",
            "price: {input_per_mtok: 10, output_per_mtok: 20}\n    quality: 0.95",
            1,
        ).replace("  backend: memory", f"  backend: sqlite\n  path: {db}")
        + "routes:\n  dear: {strategy: quality, candidates: [chat]}\n"
    )
    config_path = tmp_path / "hybridfast.yaml"
    config_path.write_text(text)
    server = serve_gateway(text)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10
    ) as client:
        for i in range(6):
            resp = client.post(
                "/v1/chat/completions",
                json={
                    "model": "dear",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                    "cache": "no-store",
                },
            )
            assert resp.status_code == 200
            client.post(
                "/v1/feedback",
                json={
                    "request_id": resp.headers["x-hybridfast-request-id"],
                    "metric": "thumbs_up",
                    "value": i % 2,
                },
            )
    server.stop()
    result = _cli("candidates", "--config", str(config_path), "--min-requests", "5", "--json")
    assert result.returncode == 0, result.stderr
    (found,) = orjson.loads(result.stdout)
    assert (found["route"], found["expensive"], found["cheaper"]) == ("dear", "chat#0", "chat#1")
    assert found["requests"] == 6
    # The same tokens at a tenth of the prices.
    assert found["cost_picos"] == 10 * found["cheaper_cost_picos"]
    assert found["saving_picos"] == found["cost_picos"] - found["cheaper_cost_picos"]
    assert found["expensive_feedback"] == pytest.approx(0.5)
    assert found["cheaper_feedback"] is None
    too_few = _cli("candidates", "--config", str(config_path), "--min-requests", "7", "--json")
    assert orjson.loads(too_few.stdout) == []
