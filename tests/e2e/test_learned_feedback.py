"""The learned router trained from the gateway's own feedback, end to end: requests to a route
listed in `router_training.routes` go through a real serve (the cheap model answers them all
under the `cost` strategy), clients judge the answers with `POST /v1/feedback`,
`hybridfast experiments train-router --from-feedback` joins the feedback with the kept prompt
embeddings and writes the model, and after a config reload the route's learned router sends
easy prompts to the cheap model and hard ones to the strong one. Too little feedback is a
clear error, not a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hybridfast.cli import main
from hybridfast.experiments.learned import LearnedModel
from tests.fakes.server import RunningServer
from tests.fakes.upstream import FakeUpstream, cheap_and_strong
from tests.unit.test_learned import HARD, labelled

pytestmark = pytest.mark.slow

MASTER = "sk-hybridfast-learned-master"


def _config(cheap: FakeUpstream, strong: FakeUpstream, db: Path, route: str) -> str:
    return f"""
server: {{master_key: {MASTER}}}
{cheap_and_strong(cheap, strong)}
routes:
  smart:
{route}
router_training: {{routes: [smart]}}
ledger: {{backend: sqlite, path: "{db}"}}
"""


GATHER = "    strategy: cost\n    candidates: [cheap, strong]\n"


def _train(config: Path, out: Path) -> int:
    return main(
        [
            "experiments",
            "train-router",
            "--from-feedback",
            "--metric",
            "good",
            "--cheap",
            "cheap",
            "--config",
            str(config),
            "-o",
            str(out),
        ]
    )


def test_train_from_feedback_then_route(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = serve_gateway(_config(fake_openai, fake_anthropic, tmp_path / "ledger.db", GATHER))
    model_path = tmp_path / "router.npz"
    rows = labelled()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
    ) as client:
        for i, row in enumerate(rows):
            resp = client.post(
                "/v1/chat/completions",
                json={"model": "smart", "messages": [{"role": "user", "content": row["prompt"]}]},
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-hybridfast-deployment"] == "cheap#0"
            judged = client.post(
                "/v1/feedback",
                json={
                    "request_id": resp.headers["x-hybridfast-request-id"],
                    "metric": "good",
                    "value": bool(row["cheap_ok"]),
                },
            )
            assert judged.status_code == 201, judged.text
            if i == 3:
                # Four judged answers, all good: a clear refusal, and no model file.
                assert _train(server.config_path, model_path) == 2
                err = capsys.readouterr().err
                assert "too little feedback to train on: 4 judged request(s)" in err
                assert "at least 10" in err
                assert not model_path.exists()

        assert _train(server.config_path, model_path) == 0
        err = capsys.readouterr().err
        assert f"{len(rows)} judged request(s) with a kept embedding" in err
        assert "go to the cheap model at quality" in err
        assert LearnedModel.load(model_path).threshold > 0

        learned = (
            "    strategy: custom\n    candidates: [cheap, strong]\n    router: learned\n"
            f'    options: {{model: "{model_path}", cheap: cheap}}\n'
        )
        text = _config(fake_openai, fake_anthropic, tmp_path / "ledger.db", learned)
        applied = client.post("/admin/config", json={"text": text})
        assert applied.status_code == 200, applied.text
        answered = []
        for prompt in ("What is the capital of Italy?", HARD[1].format("Sweden")):
            resp = client.post(
                "/v1/chat/completions",
                json={"model": "smart", "messages": [{"role": "user", "content": prompt}]},
            )
            assert resp.status_code == 200, resp.text
            answered.append(resp.headers["x-hybridfast-deployment"])
        assert answered == ["cheap#0", "strong#0"]

        # A model file that cannot be read refuses the reload; the running model stays.
        broken = text.replace(str(model_path), str(tmp_path / "missing.npz"))
        refused = client.post("/admin/config", json={"text": broken})
        assert refused.status_code == 400
        assert "missing.npz" in refused.json()["error"]["message"]
