"""The adaptive A/B bandit: it converges on the better arm, stops by its rule, reports intervals."""

from __future__ import annotations

import random

import pytest

from hybridfast.errors import InvalidRequest
from hybridfast.experiments.bandit import BanditRouter, Experiment, wilson
from hybridfast.experiments.feedback import parse_feedback


def simulate(rates: dict[str, float], requests: int, seed: int = 7) -> Experiment:
    experiment = Experiment("chat", "thumbs_up", min_samples=30, max_loss=0.005)
    experiment.rng.seed(seed)
    users = random.Random(seed + 1)
    for _ in range(requests):
        arm = experiment.order(list(rates))[0]
        experiment.record(arm, float(users.random() < rates[arm]))
    return experiment


def test_converges_on_the_better_arm_and_stops() -> None:
    experiment = simulate({"cheap#0": 0.55, "strong#0": 0.8}, 1500)
    results = experiment.results()
    assert results["status"] == "stopped"
    assert results["winner"] == "strong#0"
    by_arm = {a["arm"]: a for a in results["arms"]}
    assert by_arm["strong#0"]["n"] > by_arm["cheap#0"]["n"]  # traffic moved to the winner
    assert by_arm["cheap#0"]["n"] >= 30  # but only after the minimum sample
    low, high = by_arm["strong#0"]["ci95"]
    assert low < 0.8 < high
    assert experiment.order(["cheap#0", "strong#0"]) == ["strong#0", "cheap#0"]


def test_does_not_stop_before_the_minimum_sample() -> None:
    experiment = Experiment("r", "m", min_samples=50, max_loss=0.005)
    for _ in range(45):
        experiment.record("a", 1.0)
        experiment.record("b", 0.0)
    assert experiment.winner is None
    for _ in range(5):
        experiment.record("a", 1.0)
        experiment.record("b", 0.0)
    assert experiment.winner == "a"


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(80, 100)
    assert 0.70 < low < 0.72
    assert 0.86 < high < 0.88


def test_bandit_router_validates_its_options() -> None:
    with pytest.raises(ValueError):
        BanditRouter(max_loss=0.9)
    with pytest.raises(ValueError):
        BanditRouter(min_samples=0)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"metric": "x", "value": 1}',  # neither request nor episode
        b'{"metric": "bad name!", "value": 1, "request_id": "r"}',
        b'{"metric": "x", "value": "yes", "request_id": "r"}',
        b'{"metric": "x", "value": 1, "request_id": ""}',
        b'{"metric": "x", "value": 1e999, "request_id": "r"}',
        b'{"metric": "x", "value": 1, "request_id": "r", "extra": 1}',
    ],
)
def test_bad_feedback_is_a_400(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_feedback(body)


def test_feedback_parses_booleans_and_scores() -> None:
    assert (
        parse_feedback(b'{"metric": "thumbs_up", "value": true, "request_id": "r1"}').value == 1.0
    )
    assert parse_feedback(b'{"metric": "score", "value": 0.25, "episode_id": "e"}').value == 0.25
