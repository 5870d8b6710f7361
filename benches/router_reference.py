"""A plain-Python implementation of the router's decision and state update.

It follows `rust/core/src/router` formula for formula (same filters in the same order,
same float expressions, ties broken by config order), so that

- the benchmark compares the native router against the same work done in Python, and
- `tests/unit/test_router_reference.py` checks that both order every request the same way.

It is a reference, not a second router: no probes, no locking, one thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CAPS = ("tools", "vision", "json", "embeddings")
MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class RefDeployment:
    id: str
    name: str
    local: bool = False
    quality: float = 0.5
    price_in: int = 0  # picodollars per token
    price_out: int = 0
    gpu_second: int = 0  # picodollars per second
    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: int = 0
    tags: int = 0
    max_concurrency: int | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None


@dataclass(slots=True)
class RefLive:
    """Live state, shaped like `RouterCore.stats` (plus the window and breaker)."""

    in_flight: int = 0
    latency_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    error_rate: float = 0.0
    circuit: str = "closed"
    # For `finished`: ten buckets of (bucket number, successes, failures).
    slots: list[list[int]] = field(default_factory=lambda: [[0, 0, 0] for _ in range(10)])
    consecutive_failures: int = 0
    open_until: float = 0.0


@dataclass(slots=True)
class RefRoute:
    strategy: str
    members: list[tuple[int, int]]  # (deployment index, arm)
    weights: list[float]
    min_quality: float | None = None
    max_cost: int | None = None
    balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    downgrade_on_budget: bool = True


@dataclass(slots=True)
class RefSettings:
    default_ttft_s: float = 0.5
    default_tokens_per_s: float = 50.0
    expected_output_tokens: int = 256
    ewma_alpha: float = 0.2
    failures_to_open: int = 5
    error_rate_to_open: float = 0.5
    min_requests: int = 10
    window_s: float = 30.0
    cooldown_s: float = 15.0


@dataclass(slots=True)
class RefFeatures:
    request_id: str = ""
    input_tokens: int = 0
    max_output_tokens: int | None = None
    stream: bool = False
    needs: int = 0
    tags: int = 0
    local_only: bool = False
    budget_remaining: int | None = None


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def request_hash(request_id: str) -> int:
    h = 0xCBF29CE484222325
    for b in request_id.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return _splitmix64(h)


def _unit(x: int) -> float:
    return (x >> 11) / float(1 << 53)


def plan(
    route: RefRoute,
    deps: list[RefDeployment],
    live: list[RefLive],
    f: RefFeatures,
    s: RefSettings,
) -> tuple[list[int], list[float], list[tuple[int, str]], int | None]:
    """(order, scores, [(index, reason kind)], arm) as `Router::plan` decides them."""
    dropped: list[tuple[int, str]] = []
    cands: list[list[float]] = []  # index, cost, time, quality, err, in_flight, local, arm
    local_only = f.local_only or route.strategy == "offline"
    output = s.expected_output_tokens if f.max_output_tokens is None else f.max_output_tokens
    for index, arm in route.members:
        d = deps[index]
        st = live[index]
        if f.needs & ~d.capabilities:
            dropped.append((index, "capability"))
            continue
        if f.tags & ~d.tags:
            dropped.append((index, "tag"))
            continue
        if local_only and not d.local:
            dropped.append((index, "local"))
            continue
        if (
            f.max_output_tokens is not None
            and d.max_output_tokens is not None
            and f.max_output_tokens > d.max_output_tokens
        ):
            dropped.append((index, "output"))
            continue
        if d.context_window is not None and (
            f.input_tokens + (f.max_output_tokens or 0) > d.context_window
        ):
            dropped.append((index, "context"))
            continue
        if route.min_quality is not None and d.quality < route.min_quality:
            dropped.append((index, "quality"))
            continue
        if d.max_concurrency is not None and st.in_flight >= d.max_concurrency:
            dropped.append((index, "saturated"))
            continue
        if st.circuit != "closed":
            dropped.append((index, "circuit"))
            continue
        ttft = st.ttft_s if st.ttft_s is not None else d.ttft_s
        ttft = s.default_ttft_s if ttft is None else ttft
        if f.stream:
            time = ttft
        elif st.ttft_s is None and st.tokens_per_s is None and st.latency_s is not None:
            time = st.latency_s  # only whole (non-streamed) answers were measured
        else:
            tps = st.tokens_per_s if st.tokens_per_s is not None else d.tokens_per_s
            tps = s.default_tokens_per_s if tps is None else tps
            time = ttft + output / max(tps, 1e-6)
        cost = float(f.input_tokens * d.price_in + output * d.price_out) + d.gpu_second * time
        if route.max_cost is not None and cost > route.max_cost:
            dropped.append((index, "max_cost"))
            continue
        cands.append([index, cost, time, d.quality, st.error_rate, st.in_flight, d.local, arm, 0.0])
    if not cands:
        return [], [], dropped, None
    # The balanced penalty.
    wc, wl, wq = route.balance
    cmin = min(c[1] for c in cands)
    cmax = max(c[1] for c in cands)
    tmin = min(c[2] for c in cands)
    tmax = max(c[2] for c in cands)
    qmin = min(c[3] for c in cands)
    qmax = max(c[3] for c in cands)
    total = wc + wl + wq
    total = total if total > 0.0 else 1.0

    def norm(x: float, lo: float, hi: float) -> float:
        return (x - lo) / (hi - lo) if hi > lo else 0.0

    for c in cands:
        c[8] = (
            wc * norm(c[1], cmin, cmax)
            + wl * norm(c[2], tmin, tmax)
            + wq * norm(qmax - c[3], 0.0, qmax - qmin)
        ) / total + c[4]
    arm = _pick_arm(route, f.request_id, cands) if route.strategy == "weighted" else None
    strategy = route.strategy

    def key(c: list[float]) -> tuple[float, ...]:
        b = c[8]
        if strategy == "cost":
            return (c[1], -c[3], c[2], c[0])
        if strategy == "latency":
            return (c[2], c[1], -c[3], c[0])
        if strategy == "quality":
            return (-c[3], c[1], c[2], c[0])
        if strategy == "local-first":
            return (0.0 if c[6] else 1.0, b, 0.0, c[0])
        if strategy == "least-busy":
            return (float(c[5]), b, 0.0, c[0])
        if strategy == "weighted":
            return (0.0 if c[7] == arm else 1.0, b, 0.0, c[0])
        return (b, 0.0, 0.0, c[0])

    cands.sort(key=key)
    if f.budget_remaining is not None:
        remaining = f.budget_remaining
        refuse_all = not route.downgrade_on_budget and cands[0][1] > remaining
        kept = []
        for c in cands:
            if refuse_all or c[1] > remaining:
                dropped.append((int(c[0]), "budget"))
            else:
                kept.append(c)
        cands = kept
    order = [int(c[0]) for c in cands]
    scores = [_display(strategy, c) for c in cands]
    return order, scores, dropped, arm


def _display(strategy: str, c: list[float]) -> float:
    if strategy == "cost":
        return c[1] / 1e12
    if strategy == "latency":
        return c[2]
    if strategy == "quality":
        return c[3]
    if strategy == "least-busy":
        return float(c[5])
    return c[8]


def _pick_arm(route: RefRoute, request_id: str, cands: list[list[float]]) -> int | None:
    arms_up = {int(c[7]) for c in cands}
    total = sum(w for a, w in enumerate(route.weights) if a in arms_up)
    if total <= 0.0:
        return int(cands[0][7])
    point = _unit(request_hash(request_id)) * total
    last = None
    for a, w in enumerate(route.weights):
        if a not in arms_up or w <= 0.0:
            continue
        last = a
        if point < w:
            return a
        point -= w
    return last


def finished(
    st: RefLive,
    now: float,
    ok: bool,
    latency_s: float,
    ttft_s: float | None,
    output_tokens: int,
    s: RefSettings,
) -> None:
    """The state update `Live::finished` makes (closed circuit; no half-open here)."""
    st.in_flight = max(0, st.in_flight - 1)
    bucket_s = s.window_s / 10
    bucket = int(now / bucket_s)
    slot = st.slots[bucket % 10]
    if slot[0] != bucket:
        slot[0], slot[1], slot[2] = bucket, 0, 0
    slot[1 if ok else 2] += 1
    a = s.ewma_alpha
    if ok:
        st.consecutive_failures = 0
        st.latency_s = (
            latency_s if st.latency_s is None else st.latency_s + a * (latency_s - st.latency_s)
        )
        if ttft_s is not None:
            st.ttft_s = ttft_s if st.ttft_s is None else st.ttft_s + a * (ttft_s - st.ttft_s)
            generating = latency_s - ttft_s
            if output_tokens > 1 and generating > 1e-3:
                tps = output_tokens / generating
                st.tokens_per_s = (
                    tps
                    if st.tokens_per_s is None
                    else st.tokens_per_s + a * (tps - st.tokens_per_s)
                )
    else:
        st.consecutive_failures += 1
    total = failed = 0
    for b, good, bad in st.slots:
        if b <= bucket and bucket - b < 10 and (good or bad):
            total += good + bad
            failed += bad
    st.error_rate = failed / total if total else 0.0
    if st.circuit == "closed" and not ok:
        trips = total >= max(1, s.min_requests) and failed >= s.error_rate_to_open * total
        if st.consecutive_failures >= max(1, s.failures_to_open) or trips:
            st.circuit = "open"
            st.open_until = now + s.cooldown_s
            st.consecutive_failures = 0
