//! The routing engine: for each request, which deployments to try and in what order.
//!
//! A [`Router`] is built once from the deployments and routes of the config. Each request
//! is one call to [`Router::plan`]: it walks the candidates of the name asked for, drops
//! those that cannot serve the request (each with a [`DropReason`]), scores the rest by
//! the route's [`Strategy`] from static facts (price, quality, locality) and live state
//! (latency EWMAs, error window, in-flight count, circuit breaker), and writes the order
//! into a reusable [`Decision`]. [`Router::started`] and [`Router::finished`] feed the live
//! state back. Everything is `&self`: the router is shared between threads as is.

mod live;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::error::{CoreError, CoreResult};
use crate::money::{Picodollars, Price, PICOS_PER_USD};

pub use live::{seconds_to_nanos, Circuit, CircuitSettings, Outcome, RouterSettings};
use live::{splitmix64, unit_float, window_bucket, Admission, Live};

/// Monotonic nanoseconds since the router was built.
pub type Nanos = u64;

/// Capability bits a request may need and a deployment may have.
pub mod caps {
    pub const TOOLS: u32 = 1;
    pub const VISION: u32 = 1 << 1;
    pub const JSON: u32 = 1 << 2;
    pub const EMBEDDINGS: u32 = 1 << 3;
    /// The names, in bit order, as the config spells them.
    pub const NAMES: [&str; 4] = ["tools", "vision", "json", "embeddings"];

    /// The bit of a capability name; `None` for a name the router does not know.
    pub fn bit(name: &str) -> Option<u32> {
        NAMES.iter().position(|n| *n == name).map(|i| 1 << i)
    }
}

/// How a route orders its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    Balanced,
    Cost,
    Latency,
    Quality,
    LocalFirst,
    Offline,
    LeastBusy,
    Weighted,
    /// Filtered and ordered as `Balanced` here; a Python router reorders the result.
    Custom,
}

impl Strategy {
    pub const ALL: [Strategy; 9] = [
        Strategy::Balanced,
        Strategy::Cost,
        Strategy::Latency,
        Strategy::Quality,
        Strategy::LocalFirst,
        Strategy::Offline,
        Strategy::LeastBusy,
        Strategy::Weighted,
        Strategy::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Balanced => "balanced",
            Strategy::Cost => "cost",
            Strategy::Latency => "latency",
            Strategy::Quality => "quality",
            Strategy::LocalFirst => "local-first",
            Strategy::Offline => "offline",
            Strategy::LeastBusy => "least-busy",
            Strategy::Weighted => "weighted",
            Strategy::Custom => "custom",
        }
    }

    pub fn parse(name: &str) -> CoreResult<Strategy> {
        Strategy::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| CoreError::InvalidArgument(format!("unknown routing strategy {name:?}")))
    }
}

/// One deployment's static facts, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSpec {
    /// Unique id, `"<name>#<n>"`.
    pub id: String,
    /// The group (model name) it belongs to.
    pub name: String,
    pub local: bool,
    pub quality: f64,
    pub price: Price,
    /// Cost of a second of local hardware time, in picodollars.
    pub gpu_second: Picodollars,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// [`caps`] bits.
    pub capabilities: u32,
    /// Bits of the tags it carries (the caller of `Router::new` numbers the tags).
    pub tags: u64,
    pub max_concurrency: Option<u32>,
    /// Priors until live traffic is measured.
    pub ttft_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
}

impl DeploymentSpec {
    /// A deployment with neutral defaults, for tests and builders.
    pub fn new(id: &str, name: &str) -> Self {
        DeploymentSpec {
            id: id.to_string(),
            name: name.to_string(),
            local: false,
            quality: 0.5,
            price: Price::default(),
            gpu_second: 0,
            context_window: None,
            max_output_tokens: None,
            capabilities: 0,
            tags: 0,
            max_concurrency: None,
            ttft_s: None,
            tokens_per_s: None,
        }
    }
}

/// Relative weights of the `balanced` score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    pub cost: f64,
    pub latency: f64,
    pub quality: f64,
}

impl Default for Balance {
    fn default() -> Self {
        Balance {
            cost: 1.0,
            latency: 1.0,
            quality: 1.0,
        }
    }
}

/// A route from the config: a name resolved over candidates (groups or other routes).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    pub strategy: Strategy,
    pub candidates: Vec<String>,
    /// One per candidate (the arms of a `weighted` route).
    pub weights: Option<Vec<f64>>,
    pub min_quality: Option<f64>,
    /// The most a request may be expected to cost, in picodollars.
    pub max_cost: Option<Picodollars>,
    pub balance: Balance,
    pub downgrade_on_budget: bool,
}

impl RouteSpec {
    pub fn new(name: &str, strategy: Strategy, candidates: &[&str]) -> Self {
        RouteSpec {
            name: name.to_string(),
            strategy,
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            weights: None,
            min_quality: None,
            max_cost: None,
            balance: Balance::default(),
            downgrade_on_budget: true,
        }
    }
}

/// What the router knows about a request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Features<'a> {
    /// Picks the arm of a `weighted` route: the same id always gets the same arm.
    pub request_id: &'a str,
    pub input_tokens: u64,
    pub max_output_tokens: Option<u64>,
    pub stream: bool,
    /// [`caps`] bits the request needs.
    pub needs: u32,
    /// Tag bits a deployment must all carry.
    pub tags: u64,
    /// Only deployments on this machine/network (`local-only`).
    pub local_only: bool,
    /// What the caller may still spend, in picodollars (`None`: unlimited).
    pub budget_remaining: Option<Picodollars>,
}

/// Why a candidate was left out of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DropReason {
    /// The prompt and the requested output do not fit.
    ContextWindow {
        needed: u64,
        window: u64,
    },
    /// More output tokens asked for than the deployment can produce.
    OutputLimit {
        asked: u64,
        limit: u64,
    },
    /// Capability bits the request needs and the deployment lacks.
    MissingCapability(u32),
    /// Tag bits the request asks for and the deployment lacks.
    MissingTag(u64),
    /// The route or the caller allows local deployments only.
    NotLocal,
    BelowMinQuality {
        quality: f64,
        min: f64,
    },
    /// Expected cost above the route's `max_cost_usd` (picodollars).
    OverMaxCost {
        cost: Picodollars,
        max: Picodollars,
    },
    /// At its `max_concurrency`.
    Saturated {
        in_flight: u32,
        limit: u32,
    },
    /// The circuit is open; it half-opens in this many nanoseconds.
    CircuitOpen {
        retry_in: Nanos,
    },
    /// Half-open with its one probe already out.
    ProbeInFlight,
    /// Its hardware is down (a local server's GPU: `Router::set_hardware`).
    HardwareDown,
    /// The caller's remaining budget cannot pay the expected cost (picodollars).
    OverBudget {
        cost: Picodollars,
        remaining: Picodollars,
    },
}

impl DropReason {
    pub fn is_budget(&self) -> bool {
        matches!(self, DropReason::OverBudget { .. })
    }
}

fn usd(picos: Picodollars) -> String {
    crate::money::format_usd(i128::from(picos))
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DropReason::ContextWindow { needed, window } => {
                write!(
                    f,
                    "context window too small: needs {needed} tokens, has {window}"
                )
            }
            DropReason::OutputLimit { asked, limit } => {
                write!(
                    f,
                    "asks for {asked} output tokens, the deployment allows {limit}"
                )
            }
            DropReason::MissingCapability(bits) => {
                let names: Vec<&str> = caps::NAMES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, n)| *n)
                    .collect();
                write!(f, "lacks capability: {}", names.join(", "))
            }
            DropReason::MissingTag(_) => write!(f, "lacks a tag the request asks for"),
            DropReason::NotLocal => write!(f, "not local (local deployments only)"),
            DropReason::BelowMinQuality { quality, min } => {
                write!(f, "quality {quality} below the route's min_quality {min}")
            }
            DropReason::OverMaxCost { cost, max } => {
                write!(
                    f,
                    "expected cost ${} above the route's max_cost ${}",
                    usd(cost),
                    usd(max)
                )
            }
            DropReason::Saturated { in_flight, limit } => {
                write!(
                    f,
                    "saturated: {in_flight} of {limit} concurrent requests in flight"
                )
            }
            DropReason::CircuitOpen { retry_in } => {
                write!(
                    f,
                    "circuit open: probed again in {:.1}s",
                    retry_in as f64 / 1e9
                )
            }
            DropReason::ProbeInFlight => write!(f, "circuit half-open: a probe is in flight"),
            DropReason::HardwareDown => write!(f, "its GPU is down"),
            DropReason::OverBudget { cost, remaining } => write!(
                f,
                "over budget: expected cost ${}, ${} left",
                usd(cost),
                usd(remaining.max(0))
            ),
        }
    }
}

/// The answer of [`Router::plan`], reusable between calls (no allocation once warm).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Deployment indices in the order to try them.
    pub order: Vec<usize>,
    /// The strategy's score of each entry of `order` (see [`Router::score_meaning`]).
    pub scores: Vec<f64>,
    /// Deployments left out, with why.
    pub dropped: Vec<(usize, DropReason)>,
    /// The arm (index into the route's candidates) of a `weighted` route.
    pub arm: Option<usize>,
    /// A half-open deployment this plan probes (it is put first).
    pub probe: Option<usize>,
    /// Whether the budget is what emptied the plan.
    pub refused_for_budget: bool,
    candidates: Vec<Candidate>,
    sorted: Vec<Candidate>,
    keys: Vec<([u64; 3], usize, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    index: usize,
    cost: f64,
    // Expected time to the answer (or first token), queue wait included.
    time: f64,
    // Of which: the expected wait for a free slot at a deployment at its concurrency limit.
    wait: f64,
    // The load of the hardware it runs on, 0..1 (0 when unknown).
    busy: f64,
    quality: f64,
    error_rate: f64,
    in_flight: u32,
    local: bool,
    arm: usize,
    probe: bool,
    balanced: f64,
    key: [f64; 3],
}

struct Arm {
    weight: f64,
}

struct Route {
    name: String,
    strategy: Strategy,
    /// Deployment indices, each once, in candidate order, with the arm each came from.
    members: Vec<(usize, usize)>,
    arms: Vec<Arm>,
    arm_names: Vec<String>,
    min_quality: Option<f64>,
    max_cost: Option<Picodollars>,
    balance: Balance,
    downgrade_on_budget: bool,
}

/// A live snapshot of one deployment, for `stats`, custom routers and the admin API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub in_flight: u32,
    pub latency_s: Option<f64>,
    pub ttft_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub error_rate: f64,
    pub window_requests: u32,
    pub consecutive_failures: u32,
    pub circuit: Circuit,
    /// For an open circuit: nanoseconds until it half-opens.
    pub retry_in: Nanos,
    pub successes: u64,
    pub failures: u64,
    /// How many times the circuit has opened.
    pub times_opened: u32,
}

/// The routing engine. See the module docs.
pub struct Router {
    deployments: Vec<DeploymentSpec>,
    routes: Vec<Route>,
    names: HashMap<String, usize>,
    ids: HashMap<String, usize>,
    live: Vec<Mutex<Live>>,
    in_flight: Vec<AtomicU32>,
    // Per deployment: the load of the hardware it runs on in permille (0..=1000), or
    // HARDWARE_DOWN. Set from outside (the gateway's GPU pool), read by every plan.
    hardware: Vec<AtomicU32>,
    settings: RouterSettings,
    epoch: Instant,
}

const HARDWARE_DOWN: u32 = u32::MAX;

/// How long a plan that names a half-open deployment holds its probe slot before the
/// pipeline starts the call (the pipeline may never start it: an earlier try succeeded).
const PROBE_CLAIM_NS: Nanos = 1_000_000_000;

impl Router {
    /// Builds the router. Each deployment group (`DeploymentSpec::name`) is a route of its
    /// own with `settings.group_strategy`; `routes` may name groups or other routes.
    pub fn new(
        deployments: Vec<DeploymentSpec>,
        routes: Vec<RouteSpec>,
        settings: RouterSettings,
    ) -> CoreResult<Router> {
        let mut ids = HashMap::new();
        for (i, d) in deployments.iter().enumerate() {
            if ids.insert(d.id.clone(), i).is_some() {
                return Err(invalid(format!("deployment id {:?} appears twice", d.id)));
            }
            if !(0.0..=1.0).contains(&d.quality) {
                return Err(invalid(format!("{}: quality must be within 0..1", d.id)));
            }
        }
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, d) in deployments.iter().enumerate() {
            match groups.iter_mut().find(|(name, _)| *name == d.name) {
                Some((_, members)) => members.push(i),
                None => groups.push((d.name.clone(), vec![i])),
            }
        }
        let specs: HashMap<&str, &RouteSpec> =
            routes.iter().map(|r| (r.name.as_str(), r)).collect();
        let group_members: HashMap<&str, &Vec<usize>> =
            groups.iter().map(|(n, m)| (n.as_str(), m)).collect();
        let mut built = Vec::new();
        let mut names = HashMap::new();
        for (name, members) in &groups {
            if specs.contains_key(name.as_str()) {
                return Err(invalid(format!(
                    "{name:?} is both a route and a model name"
                )));
            }
            names.insert(name.clone(), built.len());
            built.push(Route {
                name: name.clone(),
                strategy: settings.group_strategy,
                members: members.iter().map(|&m| (m, 0)).collect(),
                arms: vec![Arm { weight: 1.0 }],
                arm_names: vec![name.clone()],
                min_quality: None,
                max_cost: None,
                balance: Balance::default(),
                downgrade_on_budget: true,
            });
        }
        for spec in &routes {
            if spec.candidates.is_empty() {
                return Err(invalid(format!("route {:?} has no candidates", spec.name)));
            }
            if let Some(w) = &spec.weights {
                if w.len() != spec.candidates.len() {
                    return Err(invalid(format!(
                        "route {:?}: one weight per candidate is needed",
                        spec.name
                    )));
                }
                if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
                    return Err(invalid(format!(
                        "route {:?}: weights must be non-negative with a positive sum",
                        spec.name
                    )));
                }
            } else if spec.strategy == Strategy::Weighted {
                return Err(invalid(format!(
                    "route {:?}: weighted needs weights",
                    spec.name
                )));
            }
            let mut members: Vec<(usize, usize)> = Vec::new();
            for (arm, candidate) in spec.candidates.iter().enumerate() {
                let mut expanded = Vec::new();
                let mut path = vec![spec.name.clone()];
                expand(candidate, &specs, &group_members, &mut path, &mut expanded)?;
                for d in expanded {
                    if !members.iter().any(|&(m, _)| m == d) {
                        members.push((d, arm));
                    }
                }
            }
            let weights = spec
                .weights
                .clone()
                .unwrap_or_else(|| vec![1.0; spec.candidates.len()]);
            names.insert(spec.name.clone(), built.len());
            built.push(Route {
                name: spec.name.clone(),
                strategy: spec.strategy,
                members,
                arms: weights.into_iter().map(|weight| Arm { weight }).collect(),
                arm_names: spec.candidates.clone(),
                min_quality: spec.min_quality,
                max_cost: spec.max_cost,
                balance: spec.balance,
                downgrade_on_budget: spec.downgrade_on_budget,
            });
        }
        let live = (0..deployments.len())
            .map(|i| Mutex::new(Live::new(splitmix64(i as u64 + 1))))
            .collect();
        let in_flight = (0..deployments.len()).map(|_| AtomicU32::new(0)).collect();
        let hardware = (0..deployments.len()).map(|_| AtomicU32::new(0)).collect();
        Ok(Router {
            deployments,
            routes: built,
            names,
            ids,
            live,
            in_flight,
            hardware,
            settings,
            epoch: Instant::now(),
        })
    }

    /// Nanoseconds since the router was built: the clock every method uses.
    pub fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos
    }

    pub fn deployments(&self) -> &[DeploymentSpec] {
        &self.deployments
    }

    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    /// The index of a group or route name, for [`Router::plan`].
    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// The index of a deployment id, for [`Router::started`] and [`Router::finished`].
    pub fn deployment_index(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    pub fn route_name(&self, route: usize) -> &str {
        &self.routes[route].name
    }

    pub fn route_strategy(&self, route: usize) -> Strategy {
        self.routes[route].strategy
    }

    /// The names of a route's candidates, which are its arms.
    pub fn route_arms(&self, route: usize) -> &[String] {
        &self.routes[route].arm_names
    }

    /// What a strategy's scores measure, for `--explain`.
    pub fn score_meaning(strategy: Strategy) -> &'static str {
        match strategy {
            Strategy::Cost => "expected cost in USD (lower first)",
            Strategy::Latency => "expected seconds (lower first)",
            Strategy::Quality => "quality (higher first)",
            Strategy::LeastBusy => "requests in flight (fewer first)",
            _ => "balanced penalty: normalised cost, latency, quality and errors (lower first)",
        }
    }

    /// Decides where the request goes. `route` comes from [`Router::route_index`]; the
    /// answer is written into `out` (cleared first). An empty `out.order` means nothing can
    /// serve the request and `out.dropped` says why.
    pub fn plan(&self, route: usize, features: &Features<'_>, now: Nanos, out: &mut Decision) {
        let route = &self.routes[route];
        out.order.clear();
        out.scores.clear();
        out.dropped.clear();
        out.candidates.clear();
        out.arm = None;
        out.probe = None;
        out.refused_for_budget = false;
        let local_only = features.local_only || route.strategy == Strategy::Offline;
        let bucket = window_bucket(now, self.settings.circuit.window_ns);
        let output = features
            .max_output_tokens
            .unwrap_or(self.settings.expected_output_tokens);
        for &(index, arm) in &route.members {
            let d = &self.deployments[index];
            let reason = static_reason(d, route, features, local_only);
            if let Some(reason) = reason {
                out.dropped.push((index, reason));
                continue;
            }
            let hardware = self.hardware[index].load(Ordering::Relaxed);
            if hardware == HARDWARE_DOWN {
                out.dropped.push((index, DropReason::HardwareDown));
                continue;
            }
            let in_flight = self.in_flight[index].load(Ordering::Relaxed);
            if let Some(limit) = d.max_concurrency {
                if in_flight >= limit.saturating_add(self.settings.max_queue) {
                    out.dropped
                        .push((index, DropReason::Saturated { in_flight, limit }));
                    continue;
                }
            }
            let (admission, ewmas, error_rate) = {
                let mut live = self.live[index].lock();
                let admission = live.admission(now);
                let rate = live.error_rate_cached(bucket);
                (admission, live.ewmas(), rate)
            };
            let probe = match admission {
                Admission::Closed => false,
                Admission::Probe => true,
                Admission::Open(retry_in) => {
                    out.dropped
                        .push((index, DropReason::CircuitOpen { retry_in }));
                    continue;
                }
                Admission::ProbeBusy => {
                    out.dropped.push((index, DropReason::ProbeInFlight));
                    continue;
                }
            };
            let time = self.expected_time(d, ewmas, features.stream, output);
            let cost = expected_cost(d, features.input_tokens, output, time);
            let wait = self.expected_wait(d, ewmas, in_flight, output);
            if let Some(max) = route.max_cost {
                if cost > max as f64 {
                    let cost = cost.ceil() as Picodollars;
                    out.dropped
                        .push((index, DropReason::OverMaxCost { cost, max }));
                    continue;
                }
            }
            // A busier GPU answers slower: its load stretches the expected time.
            let busy = f64::from(hardware) / 1000.0;
            out.candidates.push(Candidate {
                index,
                cost,
                time: (time + wait) * (1.0 + busy),
                wait,
                busy,
                quality: d.quality,
                error_rate,
                in_flight,
                local: d.local,
                arm,
                probe,
                balanced: 0.0,
                key: [0.0; 3],
            });
        }
        if out.candidates.is_empty() {
            return;
        }
        let chosen_arm = self.score(route, features, &mut out.candidates);
        out.arm = chosen_arm;
        // Sort small integer keys (total-order bits of each float, then the unique index,
        // so an unstable sort is deterministic), then move the candidates once.
        out.keys.clear();
        out.keys
            .extend(out.candidates.iter().enumerate().map(|(pos, c)| {
                (
                    [ordered(c.key[0]), ordered(c.key[1]), ordered(c.key[2])],
                    c.index,
                    pos,
                )
            }));
        out.keys.sort_unstable();
        out.sorted.clear();
        out.sorted
            .extend(out.keys.iter().map(|&(_, _, pos)| out.candidates[pos]));
        std::mem::swap(&mut out.candidates, &mut out.sorted);
        if let Some(remaining) = features.budget_remaining {
            self.apply_budget(route, remaining, out);
            if out.candidates.is_empty() {
                out.refused_for_budget = true;
                return;
            }
        }
        // A half-open deployment goes first so that it really is probed: one request per
        // probe window, with the healthy ones behind it as fallbacks.
        if let Some(pos) = out.candidates.iter().position(|c| c.probe) {
            let probe = out.candidates.remove(pos);
            let claimed = {
                let mut live = self.live[probe.index].lock();
                let free = live.admission(now) == Admission::Probe;
                if free {
                    live.claim_probe(now.saturating_add(
                        PROBE_CLAIM_NS.min(self.settings.circuit.probe_timeout_ns),
                    ));
                }
                free
            };
            if claimed {
                out.candidates.insert(0, probe);
                out.probe = Some(probe.index);
                if route.strategy == Strategy::Weighted {
                    out.arm = Some(probe.arm);
                }
            } else {
                out.dropped.push((probe.index, DropReason::ProbeInFlight));
            }
            // Any other half-open one waits for its own turn.
            let mut i = usize::from(claimed);
            while i < out.candidates.len() {
                if out.candidates[i].probe {
                    let c = out.candidates.remove(i);
                    out.dropped.push((c.index, DropReason::ProbeInFlight));
                } else {
                    i += 1;
                }
            }
        }
        for c in &out.candidates {
            out.order.push(c.index);
            out.scores.push(display_score(route.strategy, c));
        }
    }

    /// The expected wait for a slot when `in_flight` requests (running and queued) are at a
    /// deployment limited to `max_concurrency`: the requests ahead, served `limit` at a time.
    fn expected_wait(
        &self,
        d: &DeploymentSpec,
        ewmas: (Option<f64>, Option<f64>, Option<f64>),
        in_flight: u32,
        output: u64,
    ) -> f64 {
        match d.max_concurrency {
            Some(limit) if limit > 0 && in_flight >= limit => {
                let ahead = f64::from(in_flight - limit + 1);
                ahead / f64::from(limit) * self.expected_time(d, ewmas, false, output)
            }
            _ => 0.0,
        }
    }

    fn expected_time(
        &self,
        d: &DeploymentSpec,
        (latency, ttft, tps): (Option<f64>, Option<f64>, Option<f64>),
        stream: bool,
        output: u64,
    ) -> f64 {
        let measured_ttft = ttft;
        let ttft = ttft.or(d.ttft_s).unwrap_or(self.settings.default_ttft_s);
        if stream {
            // A streaming client feels the first token; the rest arrives as it is made.
            return ttft;
        }
        match (measured_ttft, tps, latency) {
            // Only whole answers were measured (non-streaming traffic reports no first
            // token): their mean duration says more than any prior.
            (None, None, Some(latency)) => latency,
            _ => {
                let tps = tps
                    .or(d.tokens_per_s)
                    .unwrap_or(self.settings.default_tokens_per_s);
                ttft + output as f64 / tps.max(1e-6)
            }
        }
    }

    /// Fills each candidate's sort key; returns the arm chosen for a weighted route.
    fn score(
        &self,
        route: &Route,
        features: &Features<'_>,
        candidates: &mut [Candidate],
    ) -> Option<usize> {
        balanced_scores(route.balance, candidates);
        let mut arm = None;
        if route.strategy == Strategy::Weighted {
            arm = pick_arm(route, features.request_id, candidates);
        }
        for c in candidates.iter_mut() {
            let b = c.balanced;
            c.key = match route.strategy {
                Strategy::Cost => [c.cost, -c.quality, c.time],
                Strategy::Latency => [c.time, c.cost, -c.quality],
                Strategy::Quality => [-c.quality, c.cost, c.time],
                // Local first; a local deployment whose queue is too long goes last (overflow).
                Strategy::LocalFirst => {
                    let tier = match (c.local, c.wait <= self.settings.local_max_wait_s) {
                        (true, true) => 0.0,
                        (false, _) => 1.0,
                        (true, false) => 2.0,
                    };
                    [tier, b, 0.0]
                }
                Strategy::LeastBusy => [f64::from(c.in_flight) + c.busy, b, 0.0],
                Strategy::Weighted => [if Some(c.arm) == arm { 0.0 } else { 1.0 }, b, 0.0],
                Strategy::Balanced | Strategy::Offline | Strategy::Custom => [b, 0.0, 0.0],
            };
        }
        arm
    }

    fn apply_budget(&self, route: &Route, remaining: Picodollars, out: &mut Decision) {
        let affordable = |c: &Candidate| c.cost <= remaining as f64;
        let first_ok = out.candidates.first().is_some_and(affordable);
        let refuse_all = !route.downgrade_on_budget && !first_ok;
        let mut i = 0;
        while i < out.candidates.len() {
            let c = out.candidates[i];
            if refuse_all || !affordable(&c) {
                let cost = c.cost.ceil() as Picodollars;
                out.dropped
                    .push((c.index, DropReason::OverBudget { cost, remaining }));
                out.candidates.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The state of the hardware deployment `index` runs on: `Some(load)` with load in 0..1
    /// (a busier GPU ranks a replica lower), `None` when it is down (the deployment is left
    /// out until it is set again).
    pub fn set_hardware(&self, index: usize, load: Option<f64>) {
        let value = match load {
            Some(load) => (load.clamp(0.0, 1.0) * 1000.0).round() as u32,
            None => HARDWARE_DOWN,
        };
        self.hardware[index].store(value, Ordering::Relaxed);
    }

    /// A call to deployment `index` began.
    pub fn started(&self, index: usize, now: Nanos) {
        self.in_flight[index].fetch_add(1, Ordering::Relaxed);
        self.live[index].lock().started(now, &self.settings.circuit);
    }

    /// A call to deployment `index` ended: feeds the EWMAs, the error window and the breaker.
    pub fn finished(&self, index: usize, outcome: &Outcome, now: Nanos) {
        // Never below zero, even if a caller reports a call it never started.
        let _ = self.in_flight[index]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.live[index]
            .lock()
            .finished(now, outcome, &self.settings);
    }

    /// A call to deployment `index` ended without saying anything about the deployment
    /// (the client went away, or its request was refused as malformed): it leaves the
    /// in-flight count, and neither the error window nor the latency averages; a half-open
    /// circuit's probe slot it held is freed (no verdict either way).
    pub fn abandoned(&self, index: usize) {
        let _ = self.in_flight[index]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.live[index].lock().abandoned();
    }

    pub fn stats(&self, index: usize, now: Nanos) -> Stats {
        let live = self.live[index].lock();
        let (latency_s, ttft_s, tokens_per_s) = live.ewmas();
        let bucket = window_bucket(now, self.settings.circuit.window_ns);
        let (error_rate, window_requests) = live.error_rate(bucket);
        let (circuit, retry_in) = live.circuit(now);
        Stats {
            in_flight: self.in_flight[index].load(Ordering::Relaxed),
            latency_s,
            ttft_s,
            tokens_per_s,
            error_rate,
            window_requests,
            consecutive_failures: live.consecutive_failures(),
            circuit,
            retry_in,
            successes: live.successes,
            failures: live.failures,
            times_opened: live.times_opened(),
        }
    }

    /// Expected cost (picodollars, rounded up) of a request on a deployment, as the plan
    /// estimates it; the pipeline may use it for the budget hold.
    pub fn expected_cost(&self, index: usize, features: &Features<'_>) -> Picodollars {
        let d = &self.deployments[index];
        let output = features
            .max_output_tokens
            .unwrap_or(self.settings.expected_output_tokens);
        let ewmas = self.live[index].lock().ewmas();
        let time = self.expected_time(d, ewmas, features.stream, output);
        expected_cost(d, features.input_tokens, output, time).ceil() as Picodollars
    }
}

/// Float bits that sort as integers in the order of `f64::total_cmp`.
fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn invalid(message: String) -> CoreError {
    CoreError::InvalidArgument(message)
}

fn expand(
    name: &str,
    routes: &HashMap<&str, &RouteSpec>,
    groups: &HashMap<&str, &Vec<usize>>,
    path: &mut Vec<String>,
    out: &mut Vec<usize>,
) -> CoreResult<()> {
    if let Some(members) = groups.get(name) {
        out.extend(members.iter().copied());
        return Ok(());
    }
    let Some(route) = routes.get(name) else {
        return Err(CoreError::NotFound(format!(
            "route {:?} names {name:?}, which is neither a model nor a route",
            path[0]
        )));
    };
    if path.iter().any(|p| p == name) {
        path.push(name.to_string());
        return Err(invalid(format!(
            "routes form a cycle: {}",
            path.join(" → ")
        )));
    }
    path.push(name.to_string());
    for candidate in &route.candidates {
        expand(candidate, routes, groups, path, out)?;
    }
    path.pop();
    Ok(())
}

fn static_reason(
    d: &DeploymentSpec,
    route: &Route,
    f: &Features<'_>,
    local_only: bool,
) -> Option<DropReason> {
    let missing = f.needs & !d.capabilities;
    if missing != 0 {
        return Some(DropReason::MissingCapability(missing));
    }
    if f.tags & !d.tags != 0 {
        return Some(DropReason::MissingTag(f.tags & !d.tags));
    }
    if local_only && !d.local {
        return Some(DropReason::NotLocal);
    }
    if let (Some(asked), Some(limit)) = (f.max_output_tokens, d.max_output_tokens) {
        if asked > limit {
            return Some(DropReason::OutputLimit { asked, limit });
        }
    }
    if let Some(window) = d.context_window {
        let needed = f
            .input_tokens
            .saturating_add(f.max_output_tokens.unwrap_or(0));
        if needed > window {
            return Some(DropReason::ContextWindow { needed, window });
        }
    }
    if let Some(min) = route.min_quality {
        if d.quality < min {
            return Some(DropReason::BelowMinQuality {
                quality: d.quality,
                min,
            });
        }
    }
    None
}

/// Tokens at their prices plus local hardware time, in (fractional) picodollars.
fn expected_cost(d: &DeploymentSpec, input: u64, output: u64, time_s: f64) -> f64 {
    // i64 arithmetic converts to f64 in one instruction; i128 only when it would overflow.
    let narrow = i64::try_from(input)
        .ok()
        .and_then(|i| i.checked_mul(d.price.input))
        .zip(
            i64::try_from(output)
                .ok()
                .and_then(|o| o.checked_mul(d.price.output)),
        )
        .and_then(|(a, b)| a.checked_add(b));
    let tokens = match narrow {
        Some(picos) => picos as f64,
        None => {
            (i128::from(input) * i128::from(d.price.input)
                + i128::from(output) * i128::from(d.price.output)) as f64
        }
    };
    tokens + d.gpu_second as f64 * time_s
}

/// The `balanced` penalty of each candidate: cost, time and (missing) quality each scaled
/// to 0..1 across the candidates, weighted, plus the recent error rate. Lower is better.
fn balanced_scores(w: Balance, cs: &mut [Candidate]) {
    let (mut cmin, mut cmax, mut tmin, mut tmax, mut qmin, mut qmax) =
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for c in cs.iter() {
        cmin = cmin.min(c.cost);
        cmax = cmax.max(c.cost);
        tmin = tmin.min(c.time);
        tmax = tmax.max(c.time);
        qmin = qmin.min(c.quality);
        qmax = qmax.max(c.quality);
    }
    let total = w.cost + w.latency + w.quality;
    let total = if total > 0.0 { total } else { 1.0 };
    let norm = |x: f64, lo: f64, hi: f64| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
    for c in cs.iter_mut() {
        c.balanced = (w.cost * norm(c.cost, cmin, cmax)
            + w.latency * norm(c.time, tmin, tmax)
            + w.quality * norm(qmax - c.quality, 0.0, qmax - qmin))
            / total
            + c.error_rate;
    }
}

/// FNV-1a, then a mixer: stable across processes and versions, unlike `DefaultHasher`.
pub fn request_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

/// The arm for this request id among the arms that still have a candidate, with the
/// weights renormalised over those, so an arm that is down does not skew the split of
/// the others and the recorded arm is the one that serves.
fn pick_arm(route: &Route, request_id: &str, cs: &[Candidate]) -> Option<usize> {
    let live_arm = |arm: usize| cs.iter().any(|c| c.arm == arm);
    let total: f64 = (0..route.arms.len())
        .filter(|&a| live_arm(a))
        .map(|a| route.arms[a].weight)
        .sum();
    if total <= 0.0 {
        return cs.first().map(|c| c.arm);
    }
    let mut point = unit_float(request_hash(request_id)) * total;
    let mut last = None;
    for (a, arm) in route.arms.iter().enumerate() {
        if !live_arm(a) || arm.weight <= 0.0 {
            continue;
        }
        last = Some(a);
        if point < arm.weight {
            return Some(a);
        }
        point -= arm.weight;
    }
    last
}

fn display_score(strategy: Strategy, c: &Candidate) -> f64 {
    match strategy {
        Strategy::Cost => c.cost / PICOS_PER_USD as f64,
        Strategy::Latency => c.time,
        Strategy::Quality => c.quality,
        Strategy::LeastBusy => f64::from(c.in_flight),
        _ => c.balanced,
    }
}
