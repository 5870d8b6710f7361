"""`hybridfast harden`: checks of the machine and the deployment, each with a status and the
evidence it rests on.

Statuses: `pass` (verified good), `warn` (works, but weaker than it should be), `fail`
(fix it), `unknown` (could not be verified: missing permission, tool or hardware interface).
A check never passes what it could not read. The command exits 1 when any check fails.

Everything a check reads goes through `Probe`: files under `root` (`/` normally; a fake tree
in tests), commands through `run`, NVML through `nvml`, the OSV database at `osv_url`. So
each check is tested against fixed inputs (golden tests), and `--root` can check a mounted
image.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybridfast.config import Config

Status = Literal["pass", "warn", "fail", "unknown"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "unknown")
DEFAULT_OSV_URL = "https://api.osv.dev/v1/querybatch"


@dataclass
class Result:
    id: str
    title: str
    status: Status
    summary: str
    evidence: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "evidence": self.evidence,
        }


# (return code, combined output), or None when the command does not exist.
Runner = Callable[[Sequence[str]], "tuple[int, str] | None"]


def run_command(cmd: Sequence[str]) -> tuple[int, str] | None:
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=10, check=False, errors="replace"
        )
    except FileNotFoundError:
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 126, str(exc)
    return done.returncode, (done.stdout + done.stderr)


def load_nvml() -> Any:
    """The `pynvml` module (from nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


@dataclass
class Probe:
    """Where the checks look; every default is the real machine."""

    config: Config
    config_path: Path | None = None
    root: Path = Path("/")
    run: Runner = run_command
    nvml: Callable[[], Any] = load_nvml
    osv_url: str | None = DEFAULT_OSV_URL  # None: offline, the check says unknown
    scan_paths: list[Path] = field(default_factory=list)
    scan_history: bool = False
    scan_git: bool = False
    home: Path = field(default_factory=Path.home)
    env_files: list[Path] = field(default_factory=list)

    def path(self, absolute: str) -> Path:
        """A system path under `root`."""
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        """A system file's text, or None when absent or unreadable."""
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None


def summary_counts(results: Sequence[Result]) -> dict[str, int]:
    return {s: sum(1 for r in results if r.status == s) for s in STATUSES}


def render_text(results: Sequence[Result]) -> str:
    marks = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unknown": "????"}
    lines = []
    for r in results:
        lines.append(f"[{marks[r.status]}] {r.title}: {r.summary}")
        lines += [f"         {e}" for e in r.evidence]
    counts = summary_counts(results)
    lines.append(
        f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, "
        f"{counts['unknown']} unknown"
    )
    return "\n".join(lines) + "\n"


def env_files_near(config_path: Path | None) -> list[Path]:
    """`.env` files `serve` may read: next to the config, in the working directory, and the
    encrypted one named by `$HYBRIDFAST_ENV_FILE`."""
    found: list[Path] = []
    places = {Path.cwd()} | ({config_path.parent} if config_path else set())
    for place in places:
        found += [p for p in (place / ".env", place / ".env.enc") if p.exists()]
    named = os.environ.get("HYBRIDFAST_ENV_FILE")
    if named:
        found.append(Path(named))
    return sorted(set(found))
