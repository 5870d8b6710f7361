"""The one metrics style: counters that bound their label sets, cache hits by kind derived
from the lookup counter, billed tokens that leave cache hits out (they agree with the
served tokens of misses), budgets as scope/name/window labels, and the request record's
samples."""

from __future__ import annotations

from hybridfast import metrics
from hybridfast.cache import metrics as cache_metrics
from hybridfast.ledger import metrics as ledger_metrics
from hybridfast.metrics import REGISTRY, Counter
from hybridfast.observability.observer import observe_metrics
from hybridfast.observability.record import RequestRecord
from hybridfast.types import Caller, LedgerRecord, Usage


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_family_keeps_at_most_max_series_label_sets() -> None:
    counter = Counter("hybridfast_test_bounded", "t", ["model"])
    counter.max_series = 3
    for i in range(10):
        counter.inc((f"made-up-{i}",))
    assert len(counter.values) == 4  # three real ones and "other"
    assert counter.values[("other",)] == 7
    counter.inc(("made-up-0",))
    assert counter.values[("made-up-0",)] == 2


def test_cache_hits_by_kind_and_misses_come_from_the_lookup_counter() -> None:
    before = {
        kind: _sample("hybridfast_cache_hits_total", {"kind": kind})
        for kind in ("exact", "semantic")
    }
    missed = _sample("hybridfast_cache_misses_total", {})
    cache_metrics.LOOKUPS.labels("hit").inc()
    cache_metrics.LOOKUPS.labels("semantic-hit").inc(2)
    cache_metrics.LOOKUPS.labels("miss").inc(3)
    cache_metrics.LOOKUPS.labels("bypass").inc()
    assert _sample("hybridfast_cache_hits_total", {"kind": "exact"}) == before["exact"] + 1
    assert _sample("hybridfast_cache_hits_total", {"kind": "semantic"}) == before["semantic"] + 2
    assert _sample("hybridfast_cache_misses_total", {}) == missed + 3


def test_billed_tokens_leave_cache_hits_out_and_agree_with_served_misses() -> None:
    """The old ledger counted a cache hit's replayed usage as billed: billed and served
    tokens disagreed (112 vs 60) as soon as the cache answered."""
    caller = Caller(key_name="agree-key", team="agree-team")
    labels = {"deployment": "agree#0", "key": "agree-key", "team": "agree-team"}
    usage = Usage(input_tokens=20, output_tokens=10)
    for cache in ("miss", "hit", "semantic-hit", "bypass"):
        ledger_metrics.count_settled(
            LedgerRecord(
                request_id=f"agree-{cache}",
                caller=caller,
                route="agree",
                deployment="agree#0",
                provider="p0",
                model="m",
                usage=usage,
                cost=0 if "hit" in cache else 30,
                latency_ms=1.0,
                ttft_ms=None,
                status=200,
                cache=cache,
            )
        )
        observe_metrics(
            RequestRecord(
                ts_ms=0,
                request_id=f"agree-{cache}",
                endpoint="chat",
                status=200,
                route="agree",
                deployment="agree#0",
                cache=cache,
                input_tokens=20,
                output_tokens=10,
            )
        )
    billed_in = _sample("hybridfast_tokens_total", {**labels, "kind": "input"})
    billed_out = _sample("hybridfast_tokens_total", {**labels, "kind": "output"})
    assert (billed_in, billed_out) == (40, 20)
    served = {
        cache: _sample(
            "hybridfast_request_tokens_total",
            {"deployment": "agree#0", "direction": "input", "cache": cache},
        )
        for cache in ("miss", "bypass", "hit", "semantic-hit")
    }
    assert served["miss"] + served["bypass"] == billed_in
    assert served["hit"] == served["semantic-hit"] == 20  # served, not billed
    assert _sample("hybridfast_spend_usd_total", labels) == 60 / 10**12


def test_a_failed_request_is_counted_with_its_code() -> None:
    labels = {"route": "codes", "deployment": "none", "status": "404"}
    before = _sample("hybridfast_request_failures_total", {**labels, "code": "ERR_MODEL_NOT_FOUND"})
    observe_metrics(
        RequestRecord(
            ts_ms=0,
            request_id="codes-1",
            endpoint="chat",
            status=404,
            route="codes",
            code="ERR_MODEL_NOT_FOUND",
            cache="bypass",
        )
    )
    after = _sample("hybridfast_request_failures_total", {**labels, "code": "ERR_MODEL_NOT_FOUND"})
    assert after == before + 1
    assert metrics.REQUESTS.values[("codes", "none", "404", "ERR_MODEL_NOT_FOUND", "bypass")] >= 1


def test_spend_by_key_can_be_switched_off_to_bound_the_series() -> None:
    caller = Caller(key_name="k-off", team="t-off")
    record = LedgerRecord(
        request_id="by-key-off",
        caller=caller,
        route="r",
        deployment="bykey#0",
        provider="p0",
        model="m",
        usage=Usage(input_tokens=5, output_tokens=5),
        cost=7,
        latency_ms=1.0,
        ttft_ms=None,
        status=200,
    )
    try:
        ledger_metrics.count_by_key(False)
        ledger_metrics.count_settled(record)
    finally:
        ledger_metrics.count_by_key(True)
    labels = {"deployment": "bykey#0", "key": "", "team": ""}
    assert _sample("hybridfast_spend_usd_total", labels) == 7 / 10**12
    keyed = {"deployment": "bykey#0", "key": "k-off", "team": "t-off"}
    assert _sample("hybridfast_spend_usd_total", keyed) == 0
