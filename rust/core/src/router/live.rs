//! Live state of one deployment: latency EWMAs, a sliding error window and the circuit
//! breaker. Each deployment has its own lock (held for a few dozen nanoseconds), so a
//! routing decision and a state update never wait on each other for long.

use super::Nanos;

const SECOND: f64 = 1e9;

/// How the circuit breaker behaves (`router.circuit` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitSettings {
    /// Consecutive failures that open the circuit.
    pub failures_to_open: u32,
    /// Error rate over the window that opens the circuit, once `min_requests` were seen.
    pub error_rate_to_open: f64,
    /// Length of the sliding error window.
    pub window_ns: Nanos,
    /// Requests in the window before the error rate counts.
    pub min_requests: u32,
    /// How long an open circuit stays open before a probe is let through.
    pub cooldown_ns: Nanos,
    /// Cooldowns are stretched by up to this fraction (0.2: 100–120 %) so that instances
    /// that saw the same outage do not all probe in the same instant.
    pub jitter: f64,
    /// Successful probes in a row that close a half-open circuit.
    pub successes_to_close: u32,
    /// A probe that has not reported back after this long is presumed lost.
    pub probe_timeout_ns: Nanos,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures_to_open: 5,
            error_rate_to_open: 0.5,
            window_ns: 30 * 1_000_000_000,
            min_requests: 10,
            cooldown_ns: 15 * 1_000_000_000,
            jitter: 0.2,
            successes_to_close: 2,
            probe_timeout_ns: 60 * 1_000_000_000,
        }
    }
}

/// The state of a circuit as `stats` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    /// Open; no traffic until the cooldown ends.
    Open,
    /// The cooldown ended: one probe at a time is let through.
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half-open",
        }
    }
}

const BUCKETS: usize = 10;

/// Outcomes over the last `window_ns`, in ten buckets so old ones fall out in steps.
#[derive(Debug, Clone, Default)]
struct ErrorWindow {
    // (bucket number since the epoch, successes, failures)
    slots: [(u64, u32, u32); BUCKETS],
}

impl ErrorWindow {
    pub(crate) fn bucket(now: Nanos, window_ns: Nanos) -> u64 {
        now / (window_ns / BUCKETS as u64).max(1)
    }

    fn record(&mut self, now: Nanos, window_ns: Nanos, ok: bool) {
        let bucket = Self::bucket(now, window_ns);
        let slot = &mut self.slots[(bucket % BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, 0, 0);
        }
        if ok {
            slot.1 = slot.1.saturating_add(1);
        } else {
            slot.2 = slot.2.saturating_add(1);
        }
    }

    /// (requests, failures) in the window whose newest bucket is `current`.
    fn counts(&self, current: u64) -> (u32, u32) {
        let mut total = 0u32;
        let mut failed = 0u32;
        for &(bucket, ok, err) in &self.slots {
            if bucket <= current && current - bucket < BUCKETS as u64 {
                total = total.saturating_add(ok).saturating_add(err);
                failed = failed.saturating_add(err);
            }
        }
        (total, failed)
    }

    fn clear(&mut self) {
        *self = ErrorWindow::default();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<f64>);

impl Ewma {
    fn update(&mut self, alpha: f64, x: f64) {
        if !x.is_finite() || x < 0.0 {
            return;
        }
        self.0 = Some(match self.0 {
            None => x,
            Some(prev) => prev + alpha * (x - prev),
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed,
    Open { until: Nanos },
    HalfOpen { successes: u32, probe_until: Nanos },
}

/// What a routing decision needs to know about a deployment's circuit right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Admission {
    Closed,
    /// Open: try again in this many nanoseconds.
    Open(Nanos),
    /// Half-open and free for a probe: the plan may claim it.
    Probe,
    /// Half-open but a probe is already out.
    ProbeBusy,
}

/// One deployment's live state. Lives behind a `parking_lot::Mutex` in the router.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    latency_s: Ewma,
    ttft_s: Ewma,
    tokens_per_s: Ewma,
    window: ErrorWindow,
    consecutive_failures: u32,
    breaker: Breaker,
    times_opened: u32,
    seed: u64,
    // (bucket, error rate, requests) as last computed; cleared by every new outcome.
    rate_cache: Option<(u64, f64, u32)>,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
}

impl Live {
    pub(crate) fn new(seed: u64) -> Self {
        Live {
            latency_s: Ewma::default(),
            ttft_s: Ewma::default(),
            tokens_per_s: Ewma::default(),
            window: ErrorWindow::default(),
            consecutive_failures: 0,
            breaker: Breaker::Closed,
            times_opened: 0,
            seed,
            rate_cache: None,
            successes: 0,
            failures: 0,
        }
    }

    /// An open circuit whose cooldown has passed becomes half-open.
    fn refresh(&mut self, now: Nanos) {
        if let Breaker::Open { until } = self.breaker {
            if now >= until {
                self.breaker = Breaker::HalfOpen {
                    successes: 0,
                    probe_until: 0,
                };
            }
        }
    }

    pub(crate) fn admission(&mut self, now: Nanos) -> Admission {
        self.refresh(now);
        match self.breaker {
            Breaker::Closed => Admission::Closed,
            Breaker::Open { until } => Admission::Open(until - now),
            Breaker::HalfOpen { probe_until, .. } if now >= probe_until => Admission::Probe,
            Breaker::HalfOpen { .. } => Admission::ProbeBusy,
        }
    }

    /// Reserves the half-open probe slot until `until` (a plan that names the deployment
    /// first holds it briefly; `started` extends it to the probe timeout).
    pub(crate) fn claim_probe(&mut self, until: Nanos) {
        if let Breaker::HalfOpen { probe_until, .. } = &mut self.breaker {
            *probe_until = until;
        }
    }

    pub(crate) fn started(&mut self, now: Nanos, settings: &CircuitSettings) {
        self.refresh(now);
        if let Breaker::HalfOpen { probe_until, .. } = &mut self.breaker {
            *probe_until = now.saturating_add(settings.probe_timeout_ns);
        }
    }

    /// A call ended without a verdict (a malformed request the upstream refused, a client
    /// that went away): if it held the half-open probe slot, the slot is free again at
    /// once, so the next request probes instead of waiting out the probe timeout.
    pub(crate) fn abandoned(&mut self) {
        if let Breaker::HalfOpen { probe_until, .. } = &mut self.breaker {
            *probe_until = 0;
        }
    }

    pub(crate) fn circuit(&self, now: Nanos) -> (Circuit, Nanos) {
        match self.breaker {
            Breaker::Closed => (Circuit::Closed, 0),
            Breaker::Open { until } if now < until => (Circuit::Open, until - now),
            _ => (Circuit::HalfOpen, 0),
        }
    }

    pub(crate) fn finished(&mut self, now: Nanos, outcome: &Outcome, settings: &RouterSettings) {
        let circuit = &settings.circuit;
        self.refresh(now);
        self.window.record(now, circuit.window_ns, outcome.ok);
        self.rate_cache = None;
        if outcome.ok {
            self.successes += 1;
            self.consecutive_failures = 0;
            let alpha = settings.ewma_alpha;
            self.latency_s.update(alpha, outcome.latency_s);
            if let Some(ttft) = outcome.ttft_s {
                self.ttft_s.update(alpha, ttft);
                let generating = outcome.latency_s - ttft;
                // One token or a near-instant answer says nothing about throughput.
                if outcome.output_tokens > 1 && generating > 1e-3 {
                    self.tokens_per_s
                        .update(alpha, outcome.output_tokens as f64 / generating);
                }
            }
        } else {
            self.failures += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
        match &mut self.breaker {
            Breaker::Closed if !outcome.ok => {
                let (total, failed) = self
                    .window
                    .counts(ErrorWindow::bucket(now, circuit.window_ns));
                let rate_trips = total >= circuit.min_requests.max(1)
                    && f64::from(failed) >= circuit.error_rate_to_open * f64::from(total);
                if self.consecutive_failures >= circuit.failures_to_open.max(1) || rate_trips {
                    self.open(now, circuit);
                }
            }
            Breaker::HalfOpen {
                successes,
                probe_until,
            } => {
                if outcome.ok {
                    *successes += 1;
                    *probe_until = 0;
                    if *successes >= circuit.successes_to_close.max(1) {
                        self.breaker = Breaker::Closed;
                        // A fresh start: the failures that opened it must not reopen it.
                        self.window.clear();
                        self.rate_cache = None;
                    }
                } else {
                    self.open(now, circuit);
                }
            }
            // Open: late answers of requests sent before it opened change nothing.
            _ => {}
        }
    }

    fn open(&mut self, now: Nanos, circuit: &CircuitSettings) {
        self.times_opened = self.times_opened.wrapping_add(1);
        let u = unit_float(splitmix64(self.seed ^ u64::from(self.times_opened) ^ now));
        let cooldown = circuit.cooldown_ns as f64 * (1.0 + circuit.jitter.max(0.0) * u);
        self.breaker = Breaker::Open {
            until: now.saturating_add(cooldown as Nanos),
        };
        self.consecutive_failures = 0;
    }

    /// (failure share, requests) in the window; `bucket` from [`window_bucket`].
    pub(crate) fn error_rate(&self, bucket: u64) -> (f64, u32) {
        let (total, failed) = self.window.counts(bucket);
        if total == 0 {
            (0.0, 0)
        } else {
            (f64::from(failed) / f64::from(total), total)
        }
    }

    /// `error_rate`, remembered until the next outcome or bucket: a plan reads it for
    /// every candidate, far more often than it changes.
    pub(crate) fn error_rate_cached(&mut self, bucket: u64) -> f64 {
        match self.rate_cache {
            Some((b, rate, _)) if b == bucket => rate,
            _ => {
                let (rate, total) = self.error_rate(bucket);
                self.rate_cache = Some((bucket, rate, total));
                rate
            }
        }
    }

    pub(crate) fn times_opened(&self) -> u32 {
        self.times_opened
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// (latency, ttft, tokens/s) as measured, `None` until traffic arrived.
    pub(crate) fn ewmas(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        (self.latency_s.0, self.ttft_s.0, self.tokens_per_s.0)
    }
}

/// The error window's newest bucket at `now`: computed once per plan, not per candidate.
pub(crate) fn window_bucket(now: Nanos, window_ns: Nanos) -> u64 {
    ErrorWindow::bucket(now, window_ns)
}

/// How a call ended, as the pipeline reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub latency_s: f64,
    pub ttft_s: Option<f64>,
    pub output_tokens: u64,
}

/// Settings shared by every route of a router (`router:` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    pub circuit: CircuitSettings,
    /// Weight of the newest sample in the latency EWMAs.
    pub ewma_alpha: f64,
    /// Priors for a deployment with neither measurements nor a configured prior.
    pub default_ttft_s: f64,
    pub default_tokens_per_s: f64,
    /// Output tokens assumed for cost and time when a request sets no `max_tokens`.
    pub expected_output_tokens: u64,
    /// Strategy for a plain deployment group (a model name with several deployments).
    pub group_strategy: super::Strategy,
    /// Requests that may wait at a deployment beyond its `max_concurrency` (the gateway's
    /// admission queue); only past that is the deployment left out as saturated.
    pub max_queue: u32,
    /// `local-first` overflows to non-local deployments once a local one's expected queue
    /// wait exceeds this many seconds.
    pub local_max_wait_s: f64,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            circuit: CircuitSettings::default(),
            ewma_alpha: 0.2,
            default_ttft_s: 0.5,
            default_tokens_per_s: 50.0,
            expected_output_tokens: 256,
            group_strategy: super::Strategy::Balanced,
            max_queue: 0,
            local_max_wait_s: f64::INFINITY,
        }
    }
}

/// Seconds as nanoseconds, clamped to what a `Nanos` can hold.
pub fn seconds_to_nanos(seconds: f64) -> Nanos {
    if seconds.is_nan() || seconds <= 0.0 {
        0
    } else {
        (seconds * SECOND).min(Nanos::MAX as f64) as Nanos
    }
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform float in [0, 1) from the top 53 bits.
pub(crate) fn unit_float(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}
