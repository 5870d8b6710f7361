"""Feedback and an adaptive A/B through a real serve: the bandit converges on the deployment
whose answers get better feedback, and feedback is stored and exported."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

MASTER = "mk-experiments-0123456789abcdef"


def test_bandit_converges_on_the_better_arm(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
) -> None:
    text = fake_config(fake_openai, fake_anthropic, server=f"  master_key: {MASTER}")
    text += (
        "routes:\n  ab:\n    strategy: custom\n    candidates: [chat]\n    router: bandit\n"
        "    options: {metric: thumbs_up, min_samples: 20, max_loss: 0.01}\n"
    )
    server = serve_gateway(text)
    # Users like p1's answers 90% of the time and p0's 20%.
    liked = {"p0": 0.2, "p1": 0.9}
    users = random.Random(3)
    served: list[str] = []
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=10
    ) as client:
        for i in range(260):
            resp = client.post(
                "/v1/chat/completions",
                json={"model": "ab", "messages": [{"role": "user", "content": f"q{i}"}]},
            )
            assert resp.status_code == 200
            deployment = resp.headers["x-hybridfast-deployment"]
            provider = "p0" if "p0" in deployment or deployment.endswith("#0") else "p1"
            served.append(provider)
            fb = client.post(
                "/v1/feedback",
                json={
                    "request_id": resp.headers["x-hybridfast-request-id"],
                    "metric": "thumbs_up",
                    "value": users.random() < liked[provider],
                },
            )
            assert fb.status_code == 201, fb.text
        (experiment,) = client.get("/admin/experiments").json()["experiments"]
        exported = client.get("/admin/feedback").text.splitlines()
        unknown = client.post(
            "/v1/feedback", json={"request_id": "nope", "metric": "thumbs_up", "value": 1}
        )
    assert experiment["route"] == "ab"
    assert experiment["status"] == "stopped"
    winner = experiment["winner"]
    assert winner is not None
    assert served[-50:].count("p1") == 50  # every answer now comes from the better arm
    assert len(exported) == 260
    assert unknown.status_code == 404

    # The CLI shows the same results, from the running gateway's admin API.
    cli = [sys.executable, "-m", "hybridfast", "experiments", "results"]
    shown = subprocess.run(
        [*cli, "--url", server.url, "--master-key", MASTER], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert f"ab (thumbs_up): stopped, winner {winner}" in shown.stdout
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()[2:]}
    assert set(rows) == {a["arm"] for a in experiment["arms"]}  # one row per arm
    for arm in experiment["arms"]:  # judged answers and interval (P(best) is sampled)
        low, high = arm["ci95"]
        assert rows[arm["arm"]].split()[1] == f"{arm['n']:g}"
        assert f"{low:.1%} - {high:.1%}" in rows[arm["arm"]]
    as_json = subprocess.run(
        [*cli, "--url", server.url, "--master-key", MASTER, "--json"],
        capture_output=True,
        text=True,
    )
    assert json.loads(as_json.stdout)["experiments"][0]["winner"] == winner
    refused = subprocess.run([*cli, "--url", server.url], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "ERR_UNAUTHORIZED" in refused.stderr
