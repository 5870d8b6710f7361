"""LiteLLM's proxy as a comparison point for `benches/test_gateway.py` (never a dependency:
CI does not install it and the gate does not read its figures).

LiteLLM goes in a virtualenv of its own, so its dependencies cannot change what the
gateway runs on:

    python -m venv /tmp/litellm-venv
    /tmp/litellm-venv/bin/pip install 'litellm[proxy]'
    HYBRIDFAST_BENCH_LITELLM=/tmp/litellm-venv/bin/litellm \\
        python -m pytest benches/test_gateway.py --benchmark-only --benchmark-json=gateway.json

With the variable set, the gateway benchmarks also load a LiteLLM proxy (one worker, the
same fake upstream, its telemetry and remote price map off) in the same run and record its
figures as `litellm_*` beside hybridfast's; `benches/plot_gateway.py` then draws its bars.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ENV = "HYBRIDFAST_BENCH_LITELLM"


def executable() -> str | None:
    """The `litellm` command to compare against, when the run asks for one."""
    path = os.environ.get(ENV)
    return path if path and Path(path).exists() else None


def _config(upstream: str) -> str:
    return f"""model_list:
  - model_name: chat
    litellm_params:
      model: openai/gpt-4.1-mini
      api_base: {upstream}
      api_key: bench
litellm_settings:
  telemetry: false
  drop_params: true
"""


@contextlib.contextmanager
def start_litellm(command: str, upstream: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Runs `litellm --config ... --port PORT` (one worker) until its liveliness probe
    answers; yields the process; stops it on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="litellm-bench-"))
    config = tmp / "config.yaml"
    config.write_text(_config(upstream))
    env = dict(os.environ)
    # No network at start (the price map ships with the package) and no telemetry. Like
    # the gateway in this benchmark, it runs without keys on loopback (LiteLLM refuses to
    # start keyless unless told this is local development).
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",
    )
    env.pop("VIRTUAL_ENV", None)
    with open(tmp / "litellm.log", "wb") as log:
        process = subprocess.Popen(
            [command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_live(f"http://127.0.0.1:{port}/health/liveliness", process, tmp / "litellm.log")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_live(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"litellm exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"litellm did not answer {url} in 120 s:\n{log.read_text()[-3000:]}")
