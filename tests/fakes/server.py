"""Real processes for end-to-end tests and benchmarks: `python -m hybridfast serve` and
`python -m tests.fakes`.

    with start_server(config_yaml, env={"OPENAI_API_KEY": "x"}) as server:
        openai.OpenAI(base_url=server.url + "/v1", api_key="k")...

The config text may contain `{port}`-free YAML; the server's port is chosen here and passed
with `--port`. The server's stderr is kept in `server.log_path` and printed when it fails to
start, so a broken config shows its own error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    startup_s: float = 0.0  # from launch to the first healthy /healthz

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode} before /healthz")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"no answer on {url}/healthz within {timeout}s")


@contextlib.contextmanager
def start_server(
    config_text: str,
    env: Mapping[str, str] | None = None,
    *,
    args: Sequence[str] = (),
    timeout: float = 20.0,
    workdir: str | Path | None = None,
    port: int | None = None,
) -> Iterator[RunningServer]:
    """Runs `python -m hybridfast serve --config <tmp file>` on a free port; yields when
    /healthz answers; stops it (SIGTERM, then SIGKILL) on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="hybridfast-serve-"))
    config_path = tmp / "hybridfast.yaml"
    config_path.write_text(config_text)
    log_path = tmp / "serve.log"
    port = port or free_port()
    full_env = dict(os.environ)
    full_env.pop("HYBRIDFAST_CONFIG", None)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    cmd = [
        sys.executable,
        "-m",
        "hybridfast",
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
        *args,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=str(workdir or tmp),
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, config_path, log_path)
    try:
        try:
            server.startup_s = _wait_healthy(server.url, process, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- serve log ---\n{server.log()}") from None
        yield server
    finally:
        server.stop()


@dataclass
class FakeProcess:
    kind: str
    url: str
    root: str
    process: subprocess.Popen[str]

    def configure(self, **switches: object) -> None:
        import json

        req = urllib.request.Request(
            self.root + "/_fake/config",
            data=json.dumps(switches).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5):
            pass


@contextlib.contextmanager
def start_fake(
    kind: str,
    *,
    chunks: int = 9,
    first_byte_ms: float = 0.0,
    per_chunk_ms: float = 0.0,
    uvloop: bool = True,
    extra: Sequence[str] = (),
) -> Iterator[FakeProcess]:
    """Runs `python -m tests.fakes` as its own process (benchmarks: the fake must not share
    the gateway's CPU time or event loop)."""
    cmd = [
        sys.executable,
        "-m",
        "tests.fakes",
        "--kind",
        kind,
        "--chunks",
        str(chunks),
        "--first-byte-ms",
        str(first_byte_ms),
        "--per-chunk-ms",
        str(per_chunk_ms),
        *(["--uvloop"] if uvloop else []),
        *extra,
    ]
    process = subprocess.Popen(cmd, cwd=str(REPO), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("ready "):
            raise RuntimeError(f"fake {kind} did not start: {line!r}")
        url = line.split(" ", 1)[1]
        root = url.removesuffix("/v1")
        yield FakeProcess(kind, url, root, process)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
