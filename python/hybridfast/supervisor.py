"""`serve --workers N`: N gateway processes on one port, kept alive by a small supervisor.

Each worker is an ordinary `hybridfast serve` process that binds the port with SO_REUSEPORT, so
the kernel spreads connections across them and no request passes through the supervisor. The
supervisor only starts workers, restarts one that dies, and forwards signals:

- SIGTERM / SIGINT: every worker drains (stops accepting, finishes in-flight requests, flushes the
  ledger) and the supervisor exits once all have; nothing is restarted meanwhile.
- SIGHUP: every worker reloads its config.

What the workers share is whatever the config shares: the ledger file (SQLite in WAL mode takes
writers from several processes) or PostgreSQL, and budget counters, which must live in Redis or
PostgreSQL for a budget to hold exactly across processes (`check_shared_state`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from hybridfast.config import Config
from hybridfast.errors import ConfigError
from hybridfast.server.workers import WORKER_DIR_ENV, WORKER_ID_ENV, WORKERS_ENV

log = logging.getLogger("hybridfast.supervisor")

# A worker that exits with this status did not start (bad config, port taken): restarting it
# would only fail again, so the supervisor stops instead of looping.
STARTUP_FAILURE = 2
# Restart back-off after a crash: doubles per quick crash, up to the cap.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
# A worker that lived this long is healthy again: its next crash restarts it at once.
HEALTHY_AFTER_S = 30.0


def resolve_workers(value: str) -> int:
    """`auto` means one per core; otherwise a positive integer."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(
            f"--workers must be a positive integer or 'auto', not {value!r}",
            hint="e.g. --workers 4, or --workers auto for one per core",
        )
    return count


def check_shared_state(config: Config, workers: int) -> None:
    """Refuse a multi-worker setup whose budgets would be counted per process."""
    if workers > 1 and config.budgets and config.ledger.counter == "local":
        raise ConfigError(
            f"{workers} workers would each count budgets on their own and could overspend "
            "them together",
            hint="set ledger.counter: redis (or postgres) so every worker draws on one counter",
        )
    if workers > 1 and config.ledger.backend == "memory":
        raise ConfigError(
            "a memory ledger cannot be shared by several workers",
            hint="use ledger.backend: sqlite (the default) or postgres",
        )


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The `serve` arguments a worker runs with: the same, minus `--workers`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return out


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    backoff_s: float = FIRST_BACKOFF_S


class Supervisor:
    """Runs `workers` copies of `serve` and keeps them running until told to stop."""

    def __init__(self, serve_argv: Sequence[str], workers: int) -> None:
        self.serve_argv = worker_argv(serve_argv)
        self.count = workers
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.exit_code = 0
        self.socket_dir = tempfile.mkdtemp(prefix="hybridfast-workers-")

    def _spawn(self, index: int, backoff_s: float = FIRST_BACKOFF_S) -> None:
        env = dict(os.environ)
        env[WORKER_ID_ENV] = str(index)
        env[WORKERS_ENV] = str(self.count)
        env[WORKER_DIR_ENV] = self.socket_dir
        cmd = [sys.executable, "-m", "hybridfast", "serve", *self.serve_argv, "--reuse-port"]
        process = subprocess.Popen(cmd, env=env)
        self.workers[process.pid] = _Worker(index, process, backoff_s=backoff_s)
        log.info("worker %d started (pid %d)", index, process.pid)

    def _forward(self, signum: int, _frame: FrameType | None = None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for worker in list(self.workers.values()):
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._forward)
        for index in range(self.count):
            self._spawn(index)
        while self.workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._on_exit(worker, os.waitstatus_to_exitcode(status))
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        log.info("all workers stopped")
        return self.exit_code

    def _on_exit(self, worker: _Worker, code: int) -> None:
        if self.stopping:
            log.info("worker %d stopped (exit %d)", worker.index, code)
            return
        lived = time.monotonic() - worker.started
        if code == STARTUP_FAILURE and lived < HEALTHY_AFTER_S:
            log.error("worker %d could not start (exit %d): stopping", worker.index, code)
            self.exit_code = STARTUP_FAILURE
            self._forward(signal.SIGTERM)
            return
        backoff = FIRST_BACKOFF_S if lived >= HEALTHY_AFTER_S else worker.backoff_s
        log.warning(
            "worker %d died (exit %d after %.1f s): restarting in %.1f s",
            worker.index,
            code,
            lived,
            backoff,
        )
        time.sleep(backoff)
        if not self.stopping:
            self._spawn(worker.index, backoff_s=min(backoff * 2, MAX_BACKOFF_S))
