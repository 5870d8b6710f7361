"""The shipped Grafana dashboard against a REAL Prometheus server: Prometheus scrapes a real
`serve` every second while traffic runs through it (answers, cache hits, streams, a
deployment that fails and cuts streams — fallbacks and recoveries —, refused requests), then
every PromQL expression of deploy/grafana/hybridfast.json is evaluated through Prometheus's
HTTP API and must return data. (GPU panels only where the machine has an NVIDIA GPU.)

Also: the tokens the gateway served on cache misses agree with the tokens the ledger billed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import fake_config
from tests.fakes.server import REPO, RunningServer, free_port
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.slow

DASHBOARD = REPO / "deploy" / "grafana" / "hybridfast.json"
MASTER = "sk-master-prometheus-test-0000"
KEYS = {"sk-user-prom-alice": ("alice", "red"), "sk-user-prom-bob": ("bob", "blue")}
# Grafana's interval variables, as a dashboard sees them over the last few minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "5m"}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the shipped dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Starts Prometheus scraping the given gateway URL every second; yields its API URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus package is not installed (.ci/run installs it)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(target_url: str) -> str:
        (tmp_path / "token").write_text(MASTER)
        target = urllib.parse.urlparse(target_url).netloc
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: hybridfast\n"
            f"    authorization: {{credentials_file: {tmp_path}/token}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path}/prometheus.yml",
                    f"--storage.tsdb.path={tmp_path}/data",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        api = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(api + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return api
            except OSError:
                time.sleep(0.05)
        raise RuntimeError((tmp_path / "prometheus.log").read_text())

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def query(api: str, expr: str) -> list[dict[str, Any]]:
    url = api + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _config(p0: FakeUpstream, p1: FakeUpstream) -> str:
    keys = "".join(
        f"  - {{key: {key}, name: {name}, team: {team}}}\n" for key, (name, team) in KEYS.items()
    )
    return fake_config(p0, p1) + (
        f"server:\n  master_key: ${{PROM_MASTER}}\n"
        f"keys:\n{keys}"
        "budgets:\n  - {scope: global, limit_usd: 100, window: day}\n"
        "  - {scope: team, name: red, limit_usd: 50, window: month}\n"
        "cache:\n  semantic: {embedder: hashing}\n"
        "limits:\n  rules:\n"
        "    - {scope: key, name: alice, rpm: 100000, tpm: 100000000}\n"
        "    - {scope: key, name: bob, rpm: 100000, tpm: 100000000}\n"
    )


async def _traffic(url: str, seconds: float) -> int:
    clients = [openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) for key in KEYS]
    deadline = time.monotonic() + seconds
    sent = 0
    i = 0
    while time.monotonic() < deadline:
        client = clients[i % len(clients)]
        i += 1
        messages: Any = [{"role": "user", "content": f"question {i % 7}"}]
        calls = [
            client.chat.completions.create(model="chat", messages=messages, temperature=0),
            client.chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": f"tell me a story {i}"}],
                stream=True,
            ),
            client.chat.completions.create(model="no-such-model", messages=messages),
        ]
        for call in calls:
            sent += 1
            try:
                result = await call
                if isinstance(result, openai.AsyncStream):
                    async for _ in result:
                        pass
            except openai.APIError:
                pass
        await asyncio.sleep(0.02)
    return sent


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    serve_gateway: Callable[..., RunningServer],
    prometheus: Callable[[str], str],
) -> None:
    # p0 fails some calls (fallbacks) and cuts every stream mid-way (recoveries on p1).
    fake_openai.fail(503, rate=0.3)
    fake_openai.cut(3)
    server = serve_gateway(_config(fake_openai, fake_anthropic), {"PROM_MASTER": MASTER})
    api = prometheus(server.url)
    assert await _traffic(server.url, 12.0) > 30
    await asyncio.sleep(3)  # the last scrapes

    metrics_text = _scrape(server.url)
    has_gpu = "hybridfast_gpu_up" in metrics_text
    empty = []
    checked = 0
    for title, expr in dashboard_expressions():
        if "hybridfast_gpu_" in expr and not has_gpu:
            continue  # no NVIDIA GPU on this machine: those panels stay empty by design
        checked += 1
        if not query(api, _expand(expr)):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    assert checked >= 30

    # Counted what the gateway served against what the ledger billed: on cache misses and
    # bypasses they are the same tokens.
    upstream = 'hybridfast_request_tokens_total{cache=~"miss|bypass"}'
    served = _by(
        query(api, f"sum by (deployment, direction) ({upstream})"), ("deployment", "direction")
    )
    billed = _by(
        query(api, 'sum by (deployment, kind) (hybridfast_tokens_total{kind=~"input|output"})'),
        ("deployment", "kind"),
    )
    assert served
    assert served == {k: v for k, v in billed.items() if v or k in served}
    assert MASTER not in metrics_text
    assert "test-key-0" not in metrics_text
    for key in KEYS:
        assert key not in metrics_text


def _scrape(url: str) -> str:
    request = urllib.request.Request(
        url + "/metrics", headers={"Authorization": f"Bearer {MASTER}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(resp.read().decode())


def _by(result: list[dict[str, Any]], labels: tuple[str, str]) -> dict[tuple[str, str], float]:
    return {
        (r["metric"].get(labels[0], ""), r["metric"].get(labels[1], "")): float(r["value"][1])
        for r in result
    }
