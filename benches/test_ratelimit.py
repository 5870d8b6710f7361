"""One request through the rate limiter (admit under six scopes, four of them limited, then
settle): the native core against the same integer GCRA in Python."""

from __future__ import annotations

from typing import Any

from hybridfast._core import RateLimiter

PERIOD = 60_000
SCOPES = ["global", "model:gpt", "route:gpt", "key:alice", "user:al", "team:red"]
LIMITS = {
    "global": (1_000_000_000, None, None),
    "model:gpt": (None, 1_000_000_000_000, None),
    "key:alice": (1_000_000_000, 1_000_000_000_000, 1_000_000),
    "team:red": (None, None, 1_000_000),
}


class PythonLimiter:
    """The reference: the core's arithmetic (drain, all-or-nothing admit, settle) in Python."""

    def __init__(self) -> None:
        self.state = {name: [0, 0, 0, 0, 0, *limits] for name, limits in LIMITS.items()}

    def acquire(self, scopes: list[str], tokens: int, now: int) -> bool:
        found = [self.state[s] for s in scopes if s in self.state]
        for st in found:
            req_level, req_at, tok_level, tok_at, running, rpm, tpm, par = st
            if par is not None and running >= par:
                return False
            if rpm is not None:
                st[0] = req_level = max(0, req_level - min(now - req_at, PERIOD) * rpm)
                st[1] = now
                if req_level + PERIOD > rpm * PERIOD:
                    return False
            if tpm is not None:
                st[2] = tok_level = max(0, tok_level - min(now - tok_at, PERIOD) * tpm)
                st[3] = now
                if tok_level + tokens * PERIOD > tpm * PERIOD:
                    return False
        for st in found:
            st[4] += 1
            if st[5] is not None:
                st[0] += PERIOD
            if st[6] is not None:
                st[2] += tokens * PERIOD
        return True

    def settle(self, scopes: list[str], estimated: int, actual: int) -> None:
        for s in scopes:
            st = self.state.get(s)
            if st is not None:
                st[4] -= 1
                if st[6] is not None:
                    st[2] = max(0, st[2] + (actual - estimated) * PERIOD)


def test_ratelimit_native(benchmark: Any) -> None:
    core = RateLimiter()
    for name, (rpm, tpm, par) in LIMITS.items():
        core.configure(name, rpm, tpm, par)
    clock = iter(range(1, 10**9))

    def one() -> bool:
        now = next(clock)
        allowed = core.acquire(SCOPES, 300, now).allowed
        core.settle(SCOPES, 300, 250, now)
        return allowed

    assert benchmark(one)


def test_ratelimit_python(benchmark: Any) -> None:
    ref = PythonLimiter()
    clock = iter(range(1, 10**9))

    def one() -> bool:
        allowed = ref.acquire(SCOPES, 300, next(clock))
        ref.settle(SCOPES, 300, 250)
        return allowed

    assert benchmark(one)
