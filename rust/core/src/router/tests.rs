use super::Strategy;
use super::*;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

const S: Nanos = 1_000_000_000;

fn dep(id: &str, name: &str, input: i64, output: i64, quality: f64) -> DeploymentSpec {
    DeploymentSpec {
        price: Price {
            input,
            output,
            cached_input: input,
            cache_write: input,
        },
        quality,
        ..DeploymentSpec::new(id, name)
    }
}

fn router(deps: Vec<DeploymentSpec>, routes: Vec<RouteSpec>) -> Router {
    Router::new(deps, routes, RouterSettings::default()).unwrap()
}

fn ids(r: &Router, d: &Decision) -> Vec<String> {
    d.order
        .iter()
        .map(|&i| r.deployments()[i].id.clone())
        .collect()
}

fn plan(r: &Router, name: &str, f: &Features<'_>, now: Nanos) -> Decision {
    let mut out = Decision::default();
    r.plan(r.route_index(name).expect("known name"), f, now, &mut out);
    out
}

fn features(input: u64) -> Features<'static> {
    Features {
        request_id: "req",
        input_tokens: input,
        ..Features::default()
    }
}

fn fail() -> Outcome {
    Outcome {
        ok: false,
        latency_s: 0.1,
        ttft_s: None,
        output_tokens: 0,
    }
}

fn ok(latency_s: f64, ttft_s: f64, output_tokens: u64) -> Outcome {
    Outcome {
        ok: true,
        latency_s,
        ttft_s: Some(ttft_s),
        output_tokens,
    }
}

fn three() -> Vec<DeploymentSpec> {
    vec![
        dep("smart#0", "smart", 3_000_000, 15_000_000, 0.9),
        dep("fast#0", "fast", 150_000, 600_000, 0.7),
        dep("mid#0", "mid", 1_000_000, 4_000_000, 0.8),
    ]
}

#[test]
fn groups_are_routes_and_unknown_names_are_not() {
    let deps = vec![
        dep("smart#0", "smart", 1, 1, 0.5),
        dep("smart#1", "smart", 1, 1, 0.5),
    ];
    let r = router(deps, vec![]);
    let d = plan(&r, "smart", &features(10), 0);
    assert_eq!(d.order.len(), 2);
    assert!(r.route_index("nope").is_none());
    assert_eq!(
        r.route_strategy(r.route_index("smart").unwrap()),
        Strategy::Balanced
    );
}

#[test]
fn cost_orders_by_expected_cost_and_respects_min_quality() {
    let mut route = RouteSpec::new("cheap", Strategy::Cost, &["smart", "fast", "mid"]);
    let r = router(three(), vec![route.clone()]);
    let d = plan(&r, "cheap", &features(1000), 0);
    assert_eq!(ids(&r, &d), ["fast#0", "mid#0", "smart#0"]);
    // 1000 × 150_000 + 256 × 600_000 picodollars, shown in dollars.
    assert!((d.scores[0] - (150_000_000.0 + 153_600_000.0) / 1e12).abs() < 1e-15);
    route.min_quality = Some(0.75);
    let r = router(three(), vec![route]);
    let d = plan(&r, "cheap", &features(1000), 0);
    assert_eq!(ids(&r, &d), ["mid#0", "smart#0"]);
    assert!(matches!(
        d.dropped[..],
        [(1, DropReason::BelowMinQuality { .. })]
    ));
}

#[test]
fn quality_stays_within_max_cost() {
    let mut route = RouteSpec::new("best", Strategy::Quality, &["smart", "fast", "mid"]);
    route.max_cost = Some(2_500_000_000); // $0.0025
    let r = router(three(), vec![route]);
    let d = plan(&r, "best", &features(1000), 0);
    // smart: 1000 × 3e6 + 256 × 15e6 = 6.84e9 > 2.5e9; mid: 2.024e9.
    assert_eq!(ids(&r, &d), ["mid#0", "fast#0"]);
    assert!(matches!(
        d.dropped[..],
        [(0, DropReason::OverMaxCost { .. })]
    ));
}

#[test]
fn latency_uses_priors_until_traffic_then_ewma() {
    let mut deps = three();
    deps[0].ttft_s = Some(0.2);
    deps[0].tokens_per_s = Some(100.0);
    deps[1].ttft_s = Some(0.3);
    deps[1].tokens_per_s = Some(200.0);
    let r = router(
        deps,
        vec![RouteSpec::new(
            "quick",
            Strategy::Latency,
            &["smart", "fast"],
        )],
    );
    let f = Features {
        max_output_tokens: Some(100),
        ..features(10)
    };
    // smart: 0.2 + 1.0; fast: 0.3 + 0.5.
    assert_eq!(ids(&r, &plan(&r, "quick", &f, 0)), ["fast#0", "smart#0"]);
    // Streaming clients feel the first token: smart's is sooner.
    let streaming = Features { stream: true, ..f };
    assert_eq!(
        ids(&r, &plan(&r, "quick", &streaming, 0)),
        ["smart#0", "fast#0"]
    );
    // Live traffic says fast is slow now: 2 s to first token, 10 tokens/s.
    for _ in 0..30 {
        r.started(1, 0);
        r.finished(1, &ok(12.0, 2.0, 100), 0);
    }
    let s = r.stats(1, 0);
    assert!(
        (s.ttft_s.unwrap() - 2.0).abs() < 1e-9 && (s.tokens_per_s.unwrap() - 10.0).abs() < 1e-9
    );
    assert_eq!(ids(&r, &plan(&r, "quick", &f, 0)), ["smart#0", "fast#0"]);
}

#[test]
fn whole_answers_teach_latency_when_no_first_token_is_reported() {
    let r = router(
        three(),
        vec![RouteSpec::new(
            "quick",
            Strategy::Latency,
            &["smart", "fast"],
        )],
    );
    // Priors: both 0.5 s + 256 / 50; the tie goes to the cheaper one.
    assert_eq!(
        ids(&r, &plan(&r, "quick", &features(10), 0)),
        ["fast#0", "smart#0"]
    );
    let whole = Outcome {
        ok: true,
        latency_s: 9.0,
        ttft_s: None,
        output_tokens: 200,
    };
    r.started(1, 0);
    r.finished(1, &whole, 0);
    let d = plan(&r, "quick", &features(10), 0);
    assert_eq!(ids(&r, &d), ["smart#0", "fast#0"]);
    assert_eq!(d.scores[1], 9.0);
}

#[test]
fn capability_tag_locality_and_window_filters_say_why() {
    let mut deps = three();
    deps[0].capabilities = caps::TOOLS | caps::VISION;
    deps[0].context_window = Some(200_000);
    deps[1].context_window = Some(8_000);
    deps[1].capabilities = caps::TOOLS;
    deps[2].local = true;
    deps[2].tags = 0b1;
    deps[2].capabilities = caps::TOOLS | caps::VISION;
    deps[2].max_output_tokens = Some(1000);
    let r = router(
        deps,
        vec![RouteSpec::new(
            "auto",
            Strategy::Balanced,
            &["smart", "fast", "mid"],
        )],
    );
    let f = Features {
        needs: caps::VISION,
        ..features(10)
    };
    let d = plan(&r, "auto", &f, 0);
    // A tie (smart dearer by as much as mid is worse) keeps the config order.
    assert_eq!(ids(&r, &d), ["smart#0", "mid#0"]);
    assert_eq!(
        d.dropped,
        [(1, DropReason::MissingCapability(caps::VISION))]
    );
    assert_eq!(d.dropped[0].1.to_string(), "lacks capability: vision");

    let f = Features {
        max_output_tokens: Some(2000),
        ..features(7_000)
    };
    let d = plan(&r, "auto", &f, 0);
    assert_eq!(ids(&r, &d), ["smart#0"]);
    assert!(d.dropped.contains(&(
        1,
        DropReason::ContextWindow {
            needed: 9_000,
            window: 8_000
        }
    )));
    assert!(d.dropped.contains(&(
        2,
        DropReason::OutputLimit {
            asked: 2000,
            limit: 1000
        }
    )));

    let f = Features {
        local_only: true,
        ..features(10)
    };
    assert_eq!(ids(&r, &plan(&r, "auto", &f, 0)), ["mid#0"]);
    let f = Features {
        tags: 0b1,
        ..features(10)
    };
    assert_eq!(ids(&r, &plan(&r, "auto", &f, 0)), ["mid#0"]);
    let f = Features {
        tags: 0b10,
        ..features(10)
    };
    assert!(plan(&r, "auto", &f, 0).order.is_empty());
}

#[test]
fn offline_never_leaves_the_machine_and_local_first_overflows_to_cloud() {
    let mut deps = three();
    deps[2].local = true;
    deps[2].max_concurrency = Some(2);
    let routes = vec![
        RouteSpec::new("off", Strategy::Offline, &["smart", "mid"]),
        RouteSpec::new("lf", Strategy::LocalFirst, &["smart", "fast", "mid"]),
    ];
    let r = router(deps, routes);
    assert_eq!(ids(&r, &plan(&r, "off", &features(10), 0)), ["mid#0"]);
    assert_eq!(ids(&r, &plan(&r, "lf", &features(10), 0))[0], "mid#0");
    r.started(2, 0);
    r.started(2, 0);
    let d = plan(&r, "lf", &features(10), 0);
    assert!(!d.order.contains(&2));
    assert_eq!(
        d.dropped,
        [(
            2,
            DropReason::Saturated {
                in_flight: 2,
                limit: 2
            }
        )]
    );
    assert!(plan(&r, "off", &features(10), 0).order.is_empty());
    r.finished(2, &ok(1.0, 0.1, 10), 0);
    assert_eq!(ids(&r, &plan(&r, "lf", &features(10), 0))[0], "mid#0");
}

#[test]
fn with_an_admission_queue_a_full_deployment_waits_and_local_first_overflows_past_the_bound() {
    let mut deps = three();
    deps[2].local = true;
    deps[2].max_concurrency = Some(1);
    deps[2].ttft_s = Some(1.0);
    deps[2].tokens_per_s = Some(1e9);
    let routes = vec![RouteSpec::new(
        "lf",
        Strategy::LocalFirst,
        &["smart", "fast", "mid"],
    )];
    let settings = RouterSettings {
        max_queue: 3,
        local_max_wait_s: 2.5,
        ..RouterSettings::default()
    };
    let r = Router::new(deps, routes, settings).unwrap();
    // Running 1 and queued 1: two requests ahead of a newcomer, 1 s each, one at a time: the
    // expected wait (2 s) is within the bound, so the local deployment still comes first.
    r.started(2, 0);
    r.started(2, 0);
    assert_eq!(ids(&r, &plan(&r, "lf", &features(10), 0))[0], "mid#0");
    // One more queued: a 3 s wait is past the bound: the cloud comes first, local stays last.
    r.started(2, 0);
    let d = plan(&r, "lf", &features(10), 0);
    assert_ne!(ids(&r, &d)[0], "mid#0");
    assert_eq!(
        ids(&r, &d).last().unwrap(),
        "mid#0",
        "a queue with room: last, not left out"
    );
    // Running 1 + queued 3 fills the queue: now it is saturated.
    r.started(2, 0);
    let d = plan(&r, "lf", &features(10), 0);
    assert!(!d.order.contains(&2));
    assert!(matches!(
        d.dropped[..],
        [(
            2,
            DropReason::Saturated {
                in_flight: 4,
                limit: 1
            }
        )]
    ));
}

#[test]
fn the_latency_strategy_sees_the_queue() {
    let mut deps = vec![dep("g#0", "g", 1, 1, 0.5), dep("g#1", "g", 1, 1, 0.5)];
    for d in &mut deps {
        d.max_concurrency = Some(1);
        d.ttft_s = Some(0.5);
    }
    deps[1].ttft_s = Some(0.4); // a little faster when idle
    let settings = RouterSettings {
        group_strategy: Strategy::Latency,
        max_queue: 10,
        ..RouterSettings::default()
    };
    let r = Router::new(deps, vec![], settings).unwrap();
    assert_eq!(ids(&r, &plan(&r, "g", &features(10), 0))[0], "g#1");
    r.started(1, 0); // busy: a newcomer would queue behind it
    assert_eq!(ids(&r, &plan(&r, "g", &features(10), 0))[0], "g#0");
}

#[test]
fn replicas_balance_by_gpu_load_and_a_down_gpu_fails_over() {
    let deps = vec![
        dep("g#0", "g", 1, 1, 0.5),
        dep("g#1", "g", 1, 1, 0.5),
        dep("g#2", "g", 1, 1, 0.5),
    ];
    for strategy in [Strategy::LeastBusy, Strategy::Latency, Strategy::Balanced] {
        let settings = RouterSettings {
            group_strategy: strategy,
            ..RouterSettings::default()
        };
        let r = Router::new(deps.clone(), vec![], settings).unwrap();
        r.set_hardware(0, Some(0.9));
        r.set_hardware(1, Some(0.1));
        r.set_hardware(2, Some(0.5));
        assert_eq!(
            ids(&r, &plan(&r, "g", &features(10), 0)),
            ["g#1", "g#2", "g#0"],
            "{strategy:?}"
        );
        r.set_hardware(1, None);
        let d = plan(&r, "g", &features(10), 0);
        assert_eq!(ids(&r, &d), ["g#2", "g#0"], "{strategy:?}");
        assert!(matches!(d.dropped[..], [(1, DropReason::HardwareDown)]));
        r.set_hardware(1, Some(0.0));
        assert_eq!(ids(&r, &plan(&r, "g", &features(10), 0))[0], "g#1");
    }
}

#[test]
fn least_busy_prefers_fewest_in_flight() {
    let deps = vec![
        dep("g#0", "g", 1, 1, 0.5),
        dep("g#1", "g", 1, 1, 0.5),
        dep("g#2", "g", 1, 1, 0.5),
    ];
    let settings = RouterSettings {
        group_strategy: Strategy::LeastBusy,
        ..RouterSettings::default()
    };
    let r = Router::new(deps, vec![], settings).unwrap();
    r.started(0, 0);
    r.started(0, 0);
    r.started(2, 0);
    let d = plan(&r, "g", &features(1), 0);
    assert_eq!(ids(&r, &d), ["g#1", "g#2", "g#0"]);
    assert_eq!(d.scores, [0.0, 1.0, 2.0]);
}

#[test]
fn balanced_trades_off_and_penalises_errors() {
    let deps = vec![
        dep("a#0", "a", 100, 100, 0.9),
        dep("b#0", "b", 100, 100, 0.5),
    ];
    let r = router(
        deps,
        vec![RouteSpec::new("auto", Strategy::Balanced, &["a", "b"])],
    );
    assert_eq!(ids(&r, &plan(&r, "auto", &features(10), 0)), ["a#0", "b#0"]);
    // Four failures of ten in the window (not enough to open): a's penalty rises by 0.4,
    // above b's 1/3 for lower quality.
    for i in 0..10 {
        r.finished(0, &if i % 3 == 0 { fail() } else { ok(1.0, 0.1, 10) }, 0);
    }
    assert_eq!(r.stats(0, 0).circuit, Circuit::Closed);
    assert_eq!(ids(&r, &plan(&r, "auto", &features(10), 0)), ["b#0", "a#0"]);
}

#[test]
fn weighted_is_deterministic_and_splits_by_weight() {
    let mut route = RouteSpec::new("ab", Strategy::Weighted, &["smart", "fast"]);
    route.weights = Some(vec![0.8, 0.2]);
    let r = router(three(), vec![route]);
    let mut counts = [0usize; 2];
    let n = 20_000;
    for i in 0..n {
        let id = format!("req-{i}");
        let f = Features {
            request_id: &id,
            ..features(10)
        };
        let d = plan(&r, "ab", &f, 0);
        let arm = d.arm.unwrap();
        counts[arm] += 1;
        // The arm's deployment goes first, the other arm is the fallback.
        assert_eq!(d.order[0], if arm == 0 { 0 } else { 1 });
        assert_eq!(d.order.len(), 2);
        assert_eq!(plan(&r, "ab", &f, 0).arm, Some(arm), "same id, same arm");
    }
    let share = counts[0] as f64 / n as f64;
    assert!((share - 0.8).abs() < 0.015, "arm 0 got {share}");
}

#[test]
fn weighted_moves_to_the_arm_that_is_up() {
    let mut route = RouteSpec::new("ab", Strategy::Weighted, &["smart", "fast"]);
    route.weights = Some(vec![0.5, 0.5]);
    let r = router(three(), vec![route]);
    for _ in 0..5 {
        r.finished(0, &fail(), 0);
    }
    for i in 0..100 {
        let id = format!("r{i}");
        let d = plan(
            &r,
            "ab",
            &Features {
                request_id: &id,
                ..features(10)
            },
            0,
        );
        assert_eq!((d.arm, &d.order[..]), (Some(1), &[1][..]));
    }
}

#[test]
fn budget_downgrades_to_an_affordable_one_or_refuses() {
    let route = RouteSpec::new("best", Strategy::Quality, &["smart", "fast", "mid"]);
    let mut strict = RouteSpec::new("strict", Strategy::Quality, &["smart", "fast", "mid"]);
    strict.downgrade_on_budget = false;
    let r = router(three(), vec![route, strict]);
    // Expected costs for 1000 in + 256 out: smart 6.84e9, mid 2.024e9, fast 3.036e8.
    let f = Features {
        budget_remaining: Some(3_000_000_000),
        ..features(1000)
    };
    let d = plan(&r, "best", &f, 0);
    assert_eq!(ids(&r, &d), ["mid#0", "fast#0"]);
    assert_eq!(
        d.dropped,
        [(
            0,
            DropReason::OverBudget {
                cost: 6_840_000_000,
                remaining: 3_000_000_000
            }
        )]
    );
    assert!(!d.refused_for_budget);
    let d = plan(&r, "strict", &f, 0);
    assert!(d.order.is_empty() && d.refused_for_budget);
    let broke = Features {
        budget_remaining: Some(1),
        ..features(1000)
    };
    let d = plan(&r, "best", &broke, 0);
    assert!(d.order.is_empty() && d.refused_for_budget && d.dropped.len() == 3);
}

#[test]
fn gpu_seconds_count_for_local_deployments() {
    let mut deps = vec![
        dep("gpu#0", "gpu", 0, 0, 0.6),
        dep("api#0", "api", 10, 10, 0.6),
    ];
    deps[0].local = true;
    deps[0].gpu_second = 1_000_000_000; // $0.001 a second
    deps[0].ttft_s = Some(0.1);
    deps[0].tokens_per_s = Some(100.0);
    let r = router(
        deps,
        vec![RouteSpec::new("c", Strategy::Cost, &["gpu", "api"])],
    );
    let d = plan(
        &r,
        "c",
        &Features {
            max_output_tokens: Some(100),
            ..features(100)
        },
        0,
    );
    // gpu: 1.1 s × 1e9 = 1.1e9; api: 200 × 10 = 2000.
    assert_eq!(ids(&r, &d), ["api#0", "gpu#0"]);
    assert!((d.scores[1] - 0.0011).abs() < 1e-12);
}

#[test]
fn breaker_opens_on_the_stated_count_then_probes_and_closes() {
    let deps = vec![dep("a#0", "a", 1, 1, 0.9), dep("b#0", "b", 10, 10, 0.9)];
    let route = RouteSpec::new("c", Strategy::Cost, &["a", "b"]);
    let circuit = CircuitSettings {
        failures_to_open: 3,
        successes_to_close: 2,
        cooldown_ns: 10 * S,
        jitter: 0.2,
        ..CircuitSettings::default()
    };
    let settings = RouterSettings {
        circuit,
        ..RouterSettings::default()
    };
    let r = Router::new(deps, vec![route], settings).unwrap();
    let f = features(10);
    for _ in 0..2 {
        r.started(0, S);
        r.finished(0, &fail(), S);
    }
    assert_eq!(
        r.stats(0, S).circuit,
        Circuit::Closed,
        "two failures of three"
    );
    assert_eq!(ids(&r, &plan(&r, "c", &f, S)), ["a#0", "b#0"]);
    r.started(0, S);
    r.finished(0, &fail(), S);
    let s = r.stats(0, S);
    assert_eq!(s.circuit, Circuit::Open);
    assert!(
        (10 * S..=12 * S).contains(&s.retry_in),
        "cooldown with jitter: {}",
        s.retry_in
    );
    let d = plan(&r, "c", &f, 2 * S);
    assert_eq!(ids(&r, &d), ["b#0"]);
    assert!(matches!(
        d.dropped[..],
        [(0, DropReason::CircuitOpen { .. })]
    ));

    // After the cooldown: one probe, put first, with the healthy one behind it.
    let later = S + s.retry_in;
    let d = plan(&r, "c", &f, later);
    assert_eq!(
        (ids(&r, &d), d.probe),
        (vec!["a#0".into(), "b#0".into()], Some(0))
    );
    let d2 = plan(&r, "c", &f, later);
    assert_eq!(ids(&r, &d2), ["b#0"], "the probe slot is taken");
    assert_eq!(d2.dropped, [(0, DropReason::ProbeInFlight)]);
    r.started(0, later);
    r.finished(0, &ok(0.5, 0.1, 10), later);
    assert_eq!(
        r.stats(0, later).circuit,
        Circuit::HalfOpen,
        "one success of two"
    );
    assert_eq!(plan(&r, "c", &f, later).probe, Some(0));
    r.started(0, later);
    r.finished(0, &ok(0.5, 0.1, 10), later);
    assert_eq!(r.stats(0, later).circuit, Circuit::Closed);
    let d = plan(&r, "c", &f, later);
    assert_eq!(
        (ids(&r, &d), d.probe),
        (vec!["a#0".into(), "b#0".into()], None)
    );
}

#[test]
fn half_open_deployments_are_probed_one_per_plan() {
    let deps = vec![
        dep("a#0", "a", 1, 1, 0.9),
        dep("b#0", "b", 2, 2, 0.9),
        dep("c#0", "c", 3, 3, 0.9),
    ];
    let circuit = CircuitSettings {
        failures_to_open: 1,
        cooldown_ns: S,
        jitter: 0.0,
        ..CircuitSettings::default()
    };
    let settings = RouterSettings {
        circuit,
        ..RouterSettings::default()
    };
    let r = Router::new(
        deps,
        vec![RouteSpec::new("r", Strategy::Cost, &["a", "b", "c"])],
        settings,
    )
    .unwrap();
    r.finished(0, &fail(), 0);
    r.finished(1, &fail(), 0);
    let first = plan(&r, "r", &features(1), S);
    assert_eq!(
        (ids(&r, &first), first.probe),
        (vec!["a#0".into(), "c#0".into()], Some(0))
    );
    assert_eq!(first.dropped, [(1, DropReason::ProbeInFlight)]);
    let second = plan(&r, "r", &features(1), S);
    assert_eq!(
        (ids(&r, &second), second.probe),
        (vec!["b#0".into(), "c#0".into()], Some(1))
    );
    assert_eq!(second.dropped, [(0, DropReason::ProbeInFlight)]);
    let third = plan(&r, "r", &features(1), S);
    assert_eq!((ids(&r, &third), third.probe), (vec!["c#0".into()], None));
}

#[test]
fn a_failed_probe_reopens_and_an_unused_claim_expires() {
    let deps = vec![dep("a#0", "a", 1, 1, 0.9)];
    let circuit = CircuitSettings {
        failures_to_open: 1,
        cooldown_ns: S,
        jitter: 0.0,
        ..CircuitSettings::default()
    };
    let r = Router::new(
        deps,
        vec![],
        RouterSettings {
            circuit,
            ..RouterSettings::default()
        },
    )
    .unwrap();
    r.finished(0, &fail(), 0);
    assert!(plan(&r, "a", &features(1), S / 2).order.is_empty());
    assert_eq!(plan(&r, "a", &features(1), S).probe, Some(0));
    // The pipeline never started that probe: the claim lapses and another plan gets it.
    assert!(plan(&r, "a", &features(1), S + S / 2).order.is_empty());
    assert_eq!(plan(&r, "a", &features(1), 2 * S + 1).probe, Some(0));
    r.started(0, 2 * S + 1);
    r.finished(0, &fail(), 3 * S);
    assert_eq!(r.stats(0, 3 * S).circuit, Circuit::Open);
    assert_eq!(r.stats(0, 3 * S).retry_in, S);
}

#[test]
fn an_abandoned_probe_frees_the_slot_at_once() {
    let deps = vec![dep("a#0", "a", 1, 1, 0.9)];
    let circuit = CircuitSettings {
        failures_to_open: 1,
        cooldown_ns: S,
        jitter: 0.0,
        probe_timeout_ns: 30 * S,
        ..CircuitSettings::default()
    };
    let r = Router::new(
        deps,
        vec![],
        RouterSettings {
            circuit,
            ..RouterSettings::default()
        },
    )
    .unwrap();
    r.finished(0, &fail(), 0);
    assert_eq!(plan(&r, "a", &features(1), S).probe, Some(0));
    r.started(0, S);
    // While the probe runs, nobody else gets the deployment.
    assert!(plan(&r, "a", &features(1), S + 1).order.is_empty());
    // A malformed request refused by the upstream says nothing about its health: the slot
    // is free for the next request now, not after the 30 s probe timeout.
    r.abandoned(0);
    assert_eq!(plan(&r, "a", &features(1), S + 2).probe, Some(0));
    assert_eq!(r.stats(0, S + 2).circuit, Circuit::HalfOpen);
    assert_eq!(r.stats(0, S + 2).in_flight, 0);
}

#[test]
fn error_rate_opens_only_with_enough_requests() {
    let deps = vec![dep("a#0", "a", 1, 1, 0.9)];
    let circuit = CircuitSettings {
        failures_to_open: 100,
        error_rate_to_open: 0.5,
        min_requests: 10,
        window_ns: 10 * S,
        ..CircuitSettings::default()
    };
    let r = Router::new(
        deps,
        vec![],
        RouterSettings {
            circuit,
            ..RouterSettings::default()
        },
    )
    .unwrap();
    for i in 0..9 {
        r.finished(0, &if i % 2 == 0 { fail() } else { ok(1.0, 0.1, 5) }, 0);
    }
    assert_eq!(
        r.stats(0, 0).circuit,
        Circuit::Closed,
        "nine requests: below min_requests"
    );
    r.finished(0, &ok(1.0, 0.1, 5), 0);
    r.finished(0, &fail(), 0); // 6 of 11 failed
    assert_eq!(r.stats(0, 0).circuit, Circuit::Open);
    // Old outcomes fall out of the window.
    let r2 = Router::new(
        vec![dep("a#0", "a", 1, 1, 0.9)],
        vec![],
        r.settings().clone(),
    )
    .unwrap();
    for _ in 0..9 {
        r2.finished(0, &fail(), 0);
    }
    assert_eq!(r2.stats(0, 0).window_requests, 9);
    assert_eq!(r2.stats(0, 11 * S).window_requests, 0);
    r2.finished(0, &ok(1.0, 0.1, 5), 11 * S);
    r2.finished(0, &fail(), 11 * S);
    assert_eq!(r2.stats(0, 11 * S).circuit, Circuit::Closed);
}

#[test]
fn in_flight_never_goes_below_zero() {
    let r = router(vec![dep("a#0", "a", 1, 1, 0.9)], vec![]);
    r.finished(0, &ok(1.0, 0.1, 5), 0);
    assert_eq!(r.stats(0, 0).in_flight, 0);
    r.started(0, 0);
    assert_eq!(r.stats(0, 0).in_flight, 1);
}

#[test]
fn threads_share_one_router_and_the_counts_stay_exact() {
    let deps = (0..8)
        .map(|i| dep(&format!("d{i}#0"), "g", 1 + i, 1, 0.5))
        .collect();
    let r = std::sync::Arc::new(router(deps, vec![]));
    let route = r.route_index("g").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut d = Decision::default();
                for i in 0..5_000u64 {
                    let id = format!("{t}-{i}");
                    let f = Features {
                        request_id: &id,
                        ..features(10)
                    };
                    r.plan(route, &f, r.now(), &mut d);
                    let first = d.order[0];
                    r.started(first, r.now());
                    let outcome = if i % 50 == 0 {
                        fail()
                    } else {
                        ok(0.2, 0.05, 20)
                    };
                    r.finished(first, &outcome, r.now());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let now = r.now();
    let (mut calls, mut in_flight) = (0, 0);
    for i in 0..8 {
        let s = r.stats(i, now);
        calls += s.successes + s.failures;
        in_flight += s.in_flight;
    }
    assert_eq!((calls, in_flight), (20_000, 0));
}

#[test]
fn routes_expand_nested_routes_and_reject_cycles_and_unknowns() {
    let routes = vec![
        RouteSpec::new("inner", Strategy::Cost, &["fast", "mid"]),
        RouteSpec::new("outer", Strategy::Quality, &["inner", "smart", "fast"]),
    ];
    let r = router(three(), routes);
    let d = plan(&r, "outer", &features(10), 0);
    assert_eq!(ids(&r, &d), ["smart#0", "mid#0", "fast#0"]);
    let cyc = vec![
        RouteSpec::new("x", Strategy::Cost, &["y"]),
        RouteSpec::new("y", Strategy::Cost, &["x"]),
    ];
    let err = Router::new(three(), cyc, RouterSettings::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("cycle"), "{err}");
    let unknown = vec![RouteSpec::new("x", Strategy::Cost, &["nope"])];
    assert!(matches!(
        Router::new(three(), unknown, RouterSettings::default()),
        Err(CoreError::NotFound(_))
    ));
    let clash = vec![RouteSpec::new("fast", Strategy::Cost, &["smart"])];
    assert!(Router::new(three(), clash, RouterSettings::default()).is_err());
}

#[test]
fn drop_reasons_read_well() {
    let r = DropReason::OverBudget {
        cost: 6_840_000_000,
        remaining: 3_000_000_000,
    };
    assert_eq!(
        r.to_string(),
        "over budget: expected cost $0.00684, $0.003 left"
    );
    let r = DropReason::CircuitOpen {
        retry_in: 12_300_000_000,
    };
    assert_eq!(r.to_string(), "circuit open: probed again in 12.3s");
}

fn arb_deployment(i: usize) -> impl proptest::strategy::Strategy<Value = DeploymentSpec> {
    (
        0i64..5,
        0i64..5,
        prop::sample::select(vec![0.5, 0.7, 0.9]),
        any::<bool>(),
        0u32..16,
        prop::option::of(prop::sample::select(vec![1_000u64, 8_000, 100_000])),
        prop::option::of(1u32..3),
    )
        .prop_map(
            move |(pi, po, quality, local, capabilities, context_window, max_concurrency)| {
                DeploymentSpec {
                    local,
                    capabilities,
                    context_window,
                    max_concurrency,
                    ..dep(
                        &format!("d{i}#0"),
                        &format!("d{i}"),
                        pi * 100_000,
                        po * 100_000,
                        quality,
                    )
                }
            },
        )
}

fn arb_router() -> impl proptest::strategy::Strategy<Value = (Vec<DeploymentSpec>, Vec<(bool, u8)>)>
{
    (1usize..12).prop_flat_map(|n| {
        let deps: Vec<_> = (0..n).map(arb_deployment).collect();
        // Per deployment: a failure or not, then 0..3 calls left in flight.
        (deps, prop::collection::vec((any::<bool>(), 0u8..3), n))
    })
}

proptest! {
    #[test]
    fn plans_partition_the_candidates_and_cost_never_picks_dearer_at_equal_quality(
        (deps, live) in arb_router(),
        strategy in prop::sample::select(Strategy::ALL.to_vec()),
        needs in 0u32..16,
        input in 0u64..20_000,
        max_out in prop::option::of(0u64..4_000),
        budget in prop::option::of(0i64..5_000_000_000),
        local_only in any::<bool>(),
    ) {
        let names: Vec<String> = deps.iter().map(|d| d.name.clone()).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut route = RouteSpec::new("r", strategy, &name_refs);
        route.weights = Some((0..names.len()).map(|i| (i + 1) as f64).collect());
        let circuit = CircuitSettings { failures_to_open: 1, ..CircuitSettings::default() };
        let settings = RouterSettings { circuit, ..RouterSettings::default() };
        let r = Router::new(deps.clone(), vec![route], settings).unwrap();
        for (i, &(failed, busy)) in live.iter().enumerate() {
            if failed { r.finished(i, &fail(), 0); }
            for _ in 0..busy { r.started(i, 0); }
        }
        let f = Features { request_id: "x", input_tokens: input, max_output_tokens: max_out,
            needs, budget_remaining: budget, local_only, ..Features::default() };
        let d = plan(&r, "r", &f, 1);
        // Every candidate is either planned or dropped, never both, never twice.
        let mut seen: Vec<usize> = d.order.iter().copied().chain(d.dropped.iter().map(|x| x.0)).collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..deps.len()).collect::<Vec<_>>());
        prop_assert_eq!(d.order.len(), d.scores.len());
        for &i in &d.order {
            let dep = &deps[i];
            prop_assert_eq!(needs & !dep.capabilities, 0);
            prop_assert!(!(local_only || strategy == Strategy::Offline) || dep.local);
            prop_assert!(!live[i].0, "an open circuit is never planned");
            prop_assert!(dep.max_concurrency.is_none_or(|m| u32::from(live[i].1) < m));
            if let Some(w) = dep.context_window {
                prop_assert!(input + max_out.unwrap_or(0) <= w);
            }
            if let Some(b) = budget { prop_assert!(r.expected_cost(i, &f) <= b); }
        }
        prop_assert_eq!(d.refused_for_budget, d.order.is_empty() && d.dropped.iter().any(|x| x.1.is_budget()));
        if strategy == Strategy::Cost {
            if let Some(&first) = d.order.first() {
                let cost = r.expected_cost(first, &f);
                for &other in &d.order {
                    if deps[other].quality == deps[first].quality {
                        prop_assert!(r.expected_cost(other, &f) >= cost);
                    }
                }
            }
        }
    }
}

#[test]
#[ignore]
fn timing_plan_32() {
    let deps: Vec<_> = (0..32)
        .map(|i| DeploymentSpec {
            capabilities: caps::TOOLS,
            ..dep(
                &format!("m{i}#0"),
                &format!("m{i}"),
                100 * (i + 1),
                400 * (i + 1),
                0.5 + (i % 9) as f64 / 20.0,
            )
        })
        .collect();
    let names: Vec<String> = (0..32).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = router(
        deps,
        vec![RouteSpec::new("auto", Strategy::Balanced, &refs)],
    );
    let f = Features {
        max_output_tokens: Some(400),
        needs: caps::TOOLS,
        ..features(1200)
    };
    let mut d = Decision::default();
    let n = 200_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        r.plan(r.route_index("auto").unwrap(), &f, r.now(), &mut d);
    }
    eprintln!("plan: {:?}/call", t.elapsed() / n);
}

proptest! {
    // Each case runs thousands of plans: fewer cases keep `cargo test` quick.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn breaker_opens_and_closes_on_exactly_the_stated_counts(
        failures_to_open in 1u32..8,
        successes_to_close in 1u32..5,
        cooldown_s in 1u64..30,
        jitter in 0.0f64..0.5,
        successes_before in 0u32..4,
    ) {
        let circuit = CircuitSettings {
            failures_to_open,
            successes_to_close,
            cooldown_ns: cooldown_s * S,
            jitter,
            min_requests: 1_000,
            ..CircuitSettings::default()
        };
        let settings = RouterSettings { circuit, ..RouterSettings::default() };
        let r = Router::new(vec![dep("a#0", "a", 1, 1, 0.5)], vec![], settings).unwrap();
        // Successes before the failures do not count towards or against opening.
        for _ in 0..successes_before {
            r.finished(0, &ok(0.1, 0.01, 2), 0);
        }
        for _ in 1..failures_to_open {
            r.finished(0, &fail(), 0);
        }
        prop_assert_eq!(r.stats(0, 0).circuit, Circuit::Closed);
        r.finished(0, &fail(), 0);
        let s = r.stats(0, 0);
        prop_assert_eq!(s.circuit, Circuit::Open);
        let low = cooldown_s * S;
        let high = (low as f64 * (1.0 + jitter)) as u64 + 1;
        prop_assert!((low..=high).contains(&s.retry_in), "{} not in {low}..={high}", s.retry_in);
        let later = s.retry_in;
        prop_assert!(plan(&r, "a", &features(1), later - 1).order.is_empty());
        for i in 0..successes_to_close {
            let d = plan(&r, "a", &features(1), later);
            prop_assert_eq!(d.probe, Some(0));
            prop_assert_eq!(r.stats(0, later).circuit, Circuit::HalfOpen, "after {} probes", i);
            r.started(0, later);
            r.finished(0, &ok(0.1, 0.01, 2), later);
        }
        prop_assert_eq!(r.stats(0, later).circuit, Circuit::Closed);
        prop_assert_eq!(plan(&r, "a", &features(1), later).probe, None);
    }

    #[test]
    fn weighted_split_follows_any_weights(
        weights in prop::collection::vec(0u8..10, 2..5),
    ) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let deps: Vec<_> = (0..weights.len())
            .map(|i| dep(&format!("d{i}#0"), &format!("d{i}"), 1, 1, 0.5))
            .collect();
        let names: Vec<String> = deps.iter().map(|d| d.name.clone()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut route = RouteSpec::new("ab", Strategy::Weighted, &refs);
        route.weights = Some(weights.iter().map(|&w| f64::from(w)).collect());
        let r = router(deps, vec![route]);
        let n = 4_000;
        let mut counts = vec![0usize; weights.len()];
        for i in 0..n {
            let id = format!("{i}");
            counts[plan(&r, "ab", &Features { request_id: &id, ..features(1) }, 0).arm.unwrap()] += 1;
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for (arm, &w) in weights.iter().enumerate() {
            let share = counts[arm] as f64 / n as f64;
            let want = f64::from(w) / total;
            // Four binomial standard deviations at n = 4000 is at most 0.032.
            prop_assert!((share - want).abs() < 0.035, "arm {arm}: {share} vs {want}");
            if w == 0 {
                prop_assert_eq!(counts[arm], 0);
            }
        }
    }
}
