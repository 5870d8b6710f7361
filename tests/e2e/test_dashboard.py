"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
`serve` under generated traffic: sign in, live numbers move, spend, the request log (filter,
open one), deployments, budgets, cache, and the config editor (a bad edit is refused with the
checker's message; a good one applies and the next request uses it). A screenshot of every page
is saved (in $HYBRIDFAST_SCREENSHOTS, else a temporary directory), and no response the page
receives carries a key."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fake_config
from tests.fakes.server import RunningServer, start_server
from tests.fakes.upstream import FakeUpstream

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]

MASTER_KEY = "mk-dashboard-test-0123456789abcdef"
PROVIDER_KEY = "test-key-0"  # what fake_config gives the fake upstream
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def gateway(fake_openai: FakeUpstream, tmp_path: Path) -> Iterator[RunningServer]:
    text = fake_config(fake_openai, server=f"  master_key: {MASTER_KEY}").replace(
        "ledger:\n  backend: memory\n", f"ledger:\n  backend: sqlite\n  path: {tmp_path}/l.db\n"
    )
    text += "budgets:\n  - {scope: global, window: month, limit_usd: 5}\n"
    text += (  # an adaptive A/B: its arms show on the Experiments page
        "routes:\n  ab:\n    strategy: custom\n    candidates: [chat]\n    router: bandit\n"
        "    options: {metric: thumbs_up, min_samples: 5}\n"
    )
    with start_server(text, workdir=tmp_path) as server:
        yield server


@pytest.fixture
def traffic(gateway: RunningServer) -> Iterator[None]:
    """A few requests a second (some failing: an unknown model) until the test ends."""
    stop = threading.Event()

    def run() -> None:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
            i = 0
            while not stop.wait(0.05):
                i += 1
                model = "chat" if i % 7 else "no-such-model"
                # Only background load for the pages: a slow answer on a busy machine is
                # not what this test is about.
                with contextlib.suppress(httpx.TimeoutException):
                    client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": [{"role": "user", "content": f"q{i}"}]},
                    )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


@pytest.fixture
def screenshots() -> Path:
    directory = Path(os.environ.get("HYBRIDFAST_SCREENSHOTS") or tempfile.mkdtemp())
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_dashboard_pages_in_chromium(
    gateway: RunningServer, traffic: None, screenshots: Path
) -> None:
    seen_bodies: list[str] = []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900})

        def keep(response: object) -> None:
            # An event stream or a redirect has no body to read here.
            with contextlib.suppress(Exception):
                seen_bodies.append(response.text())  # type: ignore[attr-defined]

        page.on("response", keep)
        page.goto(gateway.url + "/ui")

        # Sign in: a wrong key is refused, the master key is accepted.
        page.fill("#login-key", "not-the-key")
        page.click("#login button")
        page.wait_for_selector("#login-error:has-text('not an admin key')")
        page.fill("#login-key", MASTER_KEY)
        page.click("#login button")
        page.wait_for_selector("#nav:not([hidden])")
        assert not page.is_visible("#login")  # the sign-in form is gone once signed in

        # Overview: the live numbers move under the generated traffic.
        page.wait_for_function(
            "() => { const v = document.querySelector('[data-stat=requests] .value');"
            " return v && Number(v.textContent.replace(/,/g, '')) > 0; }",
            timeout=15_000,
        )
        page.wait_for_timeout(4000)  # a few seconds of history for the sparklines
        page.screenshot(path=str(screenshots / "ui-overview.png"))

        page.click("a[href='#spend']")
        page.wait_for_selector("#page-spend svg.chart")
        assert "chat" in page.inner_text("#page-spend table")
        page.screenshot(path=str(screenshots / "ui-spend.png"))

        page.click("a[href='#requests']")
        page.wait_for_selector("#page-requests tbody tr")
        page.fill("input[data-filter=status]", "404")
        page.click("#requests-filter")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#page-requests tbody tr')].length > 0 &&"
            " [...document.querySelectorAll('#page-requests tbody tr')]"
            ".every(r => r.textContent.includes('404'))"
        )
        page.click("#page-requests tbody tr")
        page.wait_for_selector("[data-request]")
        assert "ERR_MODEL_NOT_FOUND" in page.inner_text("[data-request]")
        page.screenshot(path=str(screenshots / "ui-requests.png"), full_page=True)

        page.click("a[href='#deployments']")
        page.wait_for_selector("#page-deployments td:has-text('closed')")
        page.screenshot(path=str(screenshots / "ui-deployments.png"))

        page.click("a[href='#budgets']")
        page.wait_for_selector("#page-budgets td:has-text('global')")
        page.screenshot(path=str(screenshots / "ui-budgets.png"))

        page.click("a[href='#cache']")
        page.wait_for_selector("#cache-stats")
        page.screenshot(path=str(screenshots / "ui-cache.png"))

        # Experiments: each arm's judged answers, mean and interval.
        _judge(gateway, liked=3)
        page.click("a[href='#experiments']")
        page.wait_for_selector("[data-experiment='ab'] .pill:has-text('running')")
        arm = page.inner_text("[data-experiment='ab'] tbody tr")
        assert "chat#0" in arm
        assert "100.0%" in arm  # three answers, all liked
        page.screenshot(path=str(screenshots / "ui-experiments.png"))

        # Config: secrets are masked; a bad edit is refused with the checker's message.
        page.click("a[href='#config']")
        page.wait_for_selector("#config-text")
        text = page.input_value("#config-text")
        assert MASTER_KEY not in text
        assert "<masked:" in text
        page.fill("#config-text", text.replace("backend: sqlite", "backend: cassandra"))
        page.click("#config-apply")
        page.wait_for_selector("#config-message.error:has-text('ledger.backend')")
        # A good edit applies: a new model name answers from the next request on.
        assert _chat(gateway, "chat-renamed") == 404
        renamed = text.replace("- name: chat", "- name: chat-renamed")
        page.fill(
            "#config-text", renamed.replace("candidates: [chat]", "candidates: [chat-renamed]")
        )
        page.click("#config-apply")
        page.wait_for_selector("#config-message.ok")
        # The apply is in the audit log, shown under the editor (who, what, when).
        page.wait_for_selector("#config-audit td:has-text('POST /admin/config')")
        page.screenshot(path=str(screenshots / "ui-config.png"))
        assert _chat(gateway, "chat-renamed") == 200
        browser.close()

    for body in seen_bodies:
        assert MASTER_KEY not in body
        assert PROVIDER_KEY not in body


def _chat(server: RunningServer, model: str) -> int:
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline:
        status = httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        ).status_code
        if status == 200:
            break
        time.sleep(0.1)
    return status


def _judge(server: RunningServer, liked: int) -> None:
    """`liked` answers on the experiment's route, each with a thumbs-up."""
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for i in range(liked):
            resp = client.post(
                "/v1/chat/completions",
                json={"model": "ab", "messages": [{"role": "user", "content": f"ab{i}"}]},
            )
            assert resp.status_code == 200, resp.text
            feedback = {
                "request_id": resp.headers["x-hybridfast-request-id"],
                "metric": "thumbs_up",
                "value": 1,
            }
            assert client.post("/v1/feedback", json=feedback).status_code == 201
