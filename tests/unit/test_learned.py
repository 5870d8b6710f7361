"""The learned router: the calibration rule, training on labelled prompts (MiniLM
embeddings), the CLI, and the routing decision through a real serve."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from hybridfast.cli import main
from hybridfast.experiments.learned import LearnedModel, calibrate, train_from_rows
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream, cheap_and_strong

EASY = [
    "What is the capital of {}?",
    "Say hello to {} in one word.",
    "Translate the word '{}' into Spanish.",
    "Spell {} backwards.",
    "Is {} a country or a city? One word.",
]
HARD = [
    "Prove rigorously that the spectral gap of the {} operator is bounded below, citing lemmas.",
    "Write a lock-free concurrent hash map in Rust for {} with a proof of linearizability.",
    "Derive the closed-form posterior of a hierarchical model of {} and discuss identifiability.",
    "Design a distributed consensus protocol tolerant to Byzantine faults for {} and prove safety.",
    "Analyse the asymptotic complexity of the best known algorithm for {} and prove optimality.",
]
TOPICS = [
    "France",
    "Peru",
    "Kenya",
    "Japan",
    "Norway",
    "Chile",
    "Egypt",
    "Canada",
    "Nepal",
    "Spain",
]


def labelled() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"prompt": t.format(x), "cheap_ok": True} for t, x in itertools.product(EASY, TOPICS)
    ]
    rows += [{"prompt": t.format(x), "cheap_ok": False} for t, x in itertools.product(HARD, TOPICS)]
    return rows


def test_calibration_takes_the_most_cheap_traffic_that_meets_the_target() -> None:
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    ok = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert calibrate(p, ok, 1.0).threshold == 0.8  # two cheap, no mistake
    chosen = calibrate(p, ok, 0.8)  # one mistake in six allowed
    assert (chosen.threshold, chosen.cheap_share) == (0.6, 4 / 6)
    assert chosen.quality == pytest.approx(5 / 6)
    assert calibrate(np.array([0.9]), np.array([0.0]), 1.0).cheap_share == 0.0


def test_training_separates_easy_from_hard_prompts() -> None:
    model, chosen, baselines = train_from_rows(labelled(), target=0.95)
    assert chosen.quality >= 0.95  # on prompts it was not trained on
    assert chosen.cheap_share >= 0.3  # about half the prompts are easy
    assert baselines["all_cheap_quality"] < 0.7
    assert model.probability("What is the capital of Italy?") > model.threshold
    hard = "Prove rigorously that the spectral gap of the Laplace operator is bounded below."
    assert model.probability(hard) < model.threshold


@pytest.mark.slow
def test_serve_routes_easy_prompts_to_the_cheap_model(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = tmp_path / "labelled.jsonl"
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in labelled()))
    model_path = tmp_path / "router.npz"
    args = ["experiments", "train-router", "--data", str(data), "-o", str(model_path)]
    assert main([*args, "--target-quality", "0.95"]) == 0
    assert "go to the cheap model at quality" in capsys.readouterr().err
    assert LearnedModel.load(model_path).threshold > 0
    config = f"""
{cheap_and_strong(fake_openai, fake_anthropic)}
routes:
  smart:
    strategy: custom
    candidates: [cheap, strong]
    router: "hybridfast.experiments.learned:LearnedRouter"
    options: {{model: "{model_path}", cheap: cheap}}
ledger: {{backend: memory}}
"""
    server = serve_gateway(config)
    answered = {}
    for prompt in ("What is the capital of Italy?", HARD[1].format("Sweden")):
        resp = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "smart", "messages": [{"role": "user", "content": prompt}]},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        answered[prompt] = resp.headers["x-hybridfast-deployment"]
    assert list(answered.values()) == ["cheap#0", "strong#0"]
