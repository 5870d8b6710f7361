//! Binding of `hybridfast_core::router`: `DeploymentSpec`, `RouteSpec` and `RouterCore`.
//!
//! A decision is one call (`RouterCore.plan`) that takes plain ints and bools and returns
//! the Python `Deployment` objects it was built with, in order, so the Python side builds
//! nothing per candidate. Ids, strategy and arm names are made into Python strings once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use hybridfast_core::money::Picodollars;
use hybridfast_core::router::{
    self, seconds_to_nanos, Balance, CircuitSettings, Decision, DropReason, Features, Outcome,
    Router, RouterSettings, Strategy,
};
use hybridfast_core::CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use crate::errors::to_py;
use crate::money::Price;

/// One deployment's static facts, as the router needs them.
#[pyclass(frozen, module = "hybridfast._core", name = "DeploymentSpec")]
pub struct PyDeploymentSpec {
    inner: router::DeploymentSpec,
}

#[pymethods]
impl PyDeploymentSpec {
    #[new]
    #[pyo3(signature = (
        id, name, *, local=false, quality=0.5, price=None, gpu_second=0, context_window=None,
        max_output_tokens=None, capabilities=0, tags=0, max_concurrency=None, ttft_s=None,
        tokens_per_s=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        name: String,
        local: bool,
        quality: f64,
        price: Option<PyRef<'_, Price>>,
        gpu_second: Picodollars,
        context_window: Option<u64>,
        max_output_tokens: Option<u64>,
        capabilities: u32,
        tags: u64,
        max_concurrency: Option<u32>,
        ttft_s: Option<f64>,
        tokens_per_s: Option<f64>,
    ) -> Self {
        let inner = router::DeploymentSpec {
            id,
            name,
            local,
            quality,
            price: price.map(|p| p.inner).unwrap_or_default(),
            gpu_second,
            context_window,
            max_output_tokens,
            capabilities,
            tags,
            max_concurrency,
            ttft_s,
            tokens_per_s,
        };
        PyDeploymentSpec { inner }
    }

    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
}

/// A route: a name resolved over candidates (groups or other routes) by a strategy.
#[pyclass(frozen, module = "hybridfast._core", name = "RouteSpec")]
pub struct PyRouteSpec {
    inner: router::RouteSpec,
}

#[pymethods]
impl PyRouteSpec {
    #[new]
    #[pyo3(signature = (
        name, strategy, candidates, *, weights=None, min_quality=None, max_cost=None,
        balance=(1.0, 1.0, 1.0), downgrade_on_budget=true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        strategy: &str,
        candidates: Vec<String>,
        weights: Option<Vec<f64>>,
        min_quality: Option<f64>,
        max_cost: Option<Picodollars>,
        balance: (f64, f64, f64),
        downgrade_on_budget: bool,
    ) -> PyResult<Self> {
        let inner = router::RouteSpec {
            name,
            strategy: Strategy::parse(strategy).map_err(to_py)?,
            candidates,
            weights,
            min_quality,
            max_cost,
            balance: Balance {
                cost: balance.0,
                latency: balance.1,
                quality: balance.2,
            },
            downgrade_on_budget,
        };
        Ok(PyRouteSpec { inner })
    }
}

thread_local! {
    // One reusable decision buffer per thread: a plan allocates nothing once warm.
    static DECISION: RefCell<Decision> = RefCell::new(Decision::default());
}

/// The native routing engine; thread-safe, all state behind locks and atomics.
#[pyclass(frozen, module = "hybridfast._core")]
pub struct RouterCore {
    core: Router,
    payloads: Vec<Py<PyAny>>,
    ids: Vec<Py<PyString>>,
    strategies: Vec<Py<PyString>>,
    arms: Vec<Vec<Py<PyString>>>,
    // The text of each drop reason that does not change from call to call, made once:
    // a route that always drops its embedding models for chat requests pays nothing.
    reasons: Mutex<HashMap<(u8, u64, u64), Py<PyString>>>,
}

const REASON_CACHE_LIMIT: usize = 4096;

/// A lossless key for reasons whose text depends only on their fields; `None` for those
/// that read a clock or a budget (they differ every time).
fn reason_key(reason: &DropReason) -> Option<(u8, u64, u64)> {
    Some(match *reason {
        DropReason::ContextWindow { needed, window } => (0, needed, window),
        DropReason::OutputLimit { asked, limit } => (1, asked, limit),
        DropReason::MissingCapability(bits) => (2, u64::from(bits), 0),
        DropReason::MissingTag(bits) => (3, bits, 0),
        DropReason::NotLocal => (4, 0, 0),
        DropReason::BelowMinQuality { quality, min } => (5, quality.to_bits(), min.to_bits()),
        DropReason::OverMaxCost { cost, max } => (6, cost as u64, max as u64),
        DropReason::Saturated { in_flight, limit } => (7, u64::from(in_flight), u64::from(limit)),
        DropReason::ProbeInFlight => (8, 0, 0),
        DropReason::HardwareDown => (9, 0, 0),
        DropReason::CircuitOpen { .. } | DropReason::OverBudget { .. } => return None,
    })
}

type PlanTuple<'py> = (
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyString>,
    Option<Bound<'py, PyString>>,
    Bound<'py, PyDict>,
    bool,
    Option<Bound<'py, PyString>>,
);

impl RouterCore {
    fn respond<'py>(
        &self,
        py: Python<'py>,
        route: usize,
        d: &Decision,
    ) -> PyResult<Option<PlanTuple<'py>>> {
        let order = PyList::new(py, d.order.iter().map(|&i| self.payloads[i].bind(py)))?;
        let scores = PyDict::new(py);
        for (&i, &s) in d.order.iter().zip(&d.scores) {
            scores.set_item(self.ids[i].bind(py), s)?;
        }
        let dropped = PyList::empty(py);
        if !d.dropped.is_empty() {
            // try_lock, never lock: a thread that waits here while attached to the
            // interpreter could deadlock a free-threaded build's stop-the-world GC.
            let mut cache = self.reasons.try_lock().ok();
            for (i, why) in &d.dropped {
                let key = reason_key(why);
                let known = match (&cache, key) {
                    (Some(cache), Some(key)) => cache.get(&key).map(|t| t.bind(py).clone()),
                    _ => None,
                };
                let text = match known {
                    Some(text) => text,
                    None => {
                        let text = PyString::new(py, &why.to_string());
                        if let (Some(cache), Some(key)) = (cache.as_mut(), key) {
                            if cache.len() < REASON_CACHE_LIMIT {
                                cache.insert(key, text.clone().unbind());
                            }
                        }
                        text
                    }
                };
                dropped.append((self.ids[*i].bind(py), text))?;
            }
        }
        let arm = d.arm.map(|a| self.arms[route][a].bind(py).clone());
        let probe = d.probe.map(|i| self.ids[i].bind(py).clone());
        let strategy = self.strategies[route].bind(py).clone();
        Ok(Some((
            order,
            dropped,
            strategy,
            arm,
            scores,
            d.refused_for_budget,
            probe,
        )))
    }

    fn index(&self, id: &str) -> PyResult<usize> {
        self.core
            .deployment_index(id)
            .ok_or_else(|| to_py(CoreError::NotFound(format!("deployment {id:?}"))))
    }
}

#[pymethods]
impl RouterCore {
    #[new]
    #[pyo3(signature = (
        deployments, routes, payloads, *, group_strategy="balanced", ewma_alpha=0.2,
        default_ttft_s=0.5, default_tokens_per_s=50.0, expected_output_tokens=256,
        failures_to_open=5, error_rate_to_open=0.5, window_s=30.0, min_requests=10,
        cooldown_s=15.0, jitter=0.2, successes_to_close=2, probe_timeout_s=60.0, max_queue=0,
        local_max_wait_s=f64::INFINITY,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        deployments: Vec<PyRef<'_, PyDeploymentSpec>>,
        routes: Vec<PyRef<'_, PyRouteSpec>>,
        payloads: Vec<Py<PyAny>>,
        group_strategy: &str,
        ewma_alpha: f64,
        default_ttft_s: f64,
        default_tokens_per_s: f64,
        expected_output_tokens: u64,
        failures_to_open: u32,
        error_rate_to_open: f64,
        window_s: f64,
        min_requests: u32,
        cooldown_s: f64,
        jitter: f64,
        successes_to_close: u32,
        probe_timeout_s: f64,
        max_queue: u32,
        local_max_wait_s: f64,
    ) -> PyResult<Self> {
        if payloads.len() != deployments.len() {
            return Err(to_py(CoreError::InvalidArgument(
                "one payload per deployment is needed".into(),
            )));
        }
        if !(0.0..=1.0).contains(&ewma_alpha) || ewma_alpha == 0.0 {
            return Err(to_py(CoreError::InvalidArgument(
                "ewma_alpha must be in (0, 1]".into(),
            )));
        }
        let settings = RouterSettings {
            circuit: CircuitSettings {
                failures_to_open,
                error_rate_to_open,
                window_ns: seconds_to_nanos(window_s).max(1),
                min_requests,
                cooldown_ns: seconds_to_nanos(cooldown_s),
                jitter,
                successes_to_close,
                probe_timeout_ns: seconds_to_nanos(probe_timeout_s),
            },
            ewma_alpha,
            default_ttft_s,
            default_tokens_per_s,
            expected_output_tokens,
            group_strategy: Strategy::parse(group_strategy).map_err(to_py)?,
            max_queue,
            local_max_wait_s,
        };
        let specs: Vec<_> = deployments.iter().map(|d| d.inner.clone()).collect();
        let route_specs: Vec<_> = routes.iter().map(|r| r.inner.clone()).collect();
        let core = Router::new(specs, route_specs, settings).map_err(to_py)?;
        let intern = |s: &str| PyString::intern(py, s).unbind();
        let ids = core.deployments().iter().map(|d| intern(&d.id)).collect();
        let strategies = (0..core.route_count())
            .map(|r| intern(core.route_strategy(r).as_str()))
            .collect();
        let arms = (0..core.route_count())
            .map(|r| core.route_arms(r).iter().map(|a| intern(a)).collect())
            .collect();
        Ok(RouterCore {
            core,
            payloads,
            ids,
            strategies,
            arms,
            reasons: Mutex::new(HashMap::new()),
        })
    }

    /// Decides where a request goes, in one call. Returns `None` for an unknown name, else
    /// `(deployments, dropped, strategy, arm, scores, refused_for_budget, probe)`:
    /// the payload objects in the order to try them, `(id, reason)` for each one left out,
    /// the route's strategy, the arm of a weighted route, `{id: score}`, whether the
    /// budget is what emptied the plan, and the id of a half-open deployment being probed.
    #[pyo3(signature = (
        name, request_id="", input_tokens=0, max_output_tokens=None, stream=false, needs=0,
        tags=0, local_only=false, budget_remaining=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn plan<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        request_id: &str,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        stream: bool,
        needs: u32,
        tags: u64,
        local_only: bool,
        budget_remaining: Option<Picodollars>,
    ) -> PyResult<Option<PlanTuple<'py>>> {
        let Some(route) = self.core.route_index(name) else {
            return Ok(None);
        };
        let features = Features {
            request_id,
            input_tokens,
            max_output_tokens,
            stream,
            needs,
            tags,
            local_only,
            budget_remaining,
        };
        let now = self.core.now();
        DECISION.with(|cell| match cell.try_borrow_mut() {
            Ok(mut d) => {
                self.core.plan(route, &features, now, &mut d);
                self.respond(py, route, &d)
            }
            // Re-entered on this thread (a finaliser that routes): a fresh buffer.
            Err(_) => {
                let mut d = Decision::default();
                self.core.plan(route, &features, now, &mut d);
                self.respond(py, route, &d)
            }
        })
    }

    /// A call to deployment `id` began.
    fn started(&self, id: &str) -> PyResult<()> {
        let index = self.index(id)?;
        self.core.started(index, self.core.now());
        Ok(())
    }

    /// A call ended: feeds the latency EWMAs, the error window and the circuit breaker.
    #[pyo3(signature = (id, *, ok, latency_s, ttft_s=None, output_tokens=0))]
    fn finished(
        &self,
        id: &str,
        ok: bool,
        latency_s: f64,
        ttft_s: Option<f64>,
        output_tokens: u64,
    ) -> PyResult<()> {
        let index = self.index(id)?;
        let outcome = Outcome {
            ok,
            latency_s,
            ttft_s,
            output_tokens,
        };
        self.core.finished(index, &outcome, self.core.now());
        Ok(())
    }

    /// A call ended with no verdict on the deployment (client disconnect, a request the
    /// upstream refused as malformed): the in-flight count drops and a half-open probe slot
    /// it held is freed; the error window and latency averages do not change.
    fn abandoned(&self, id: &str) -> PyResult<()> {
        let index = self.index(id)?;
        self.core.abandoned(index);
        Ok(())
    }

    /// The state of the hardware deployment `id` runs on: a load in 0..1 (a busier GPU ranks
    /// the replica lower), or None when it is down (left out until set again).
    fn set_hardware(&self, id: &str, load: Option<f64>) -> PyResult<()> {
        let index = self.index(id)?;
        self.core.set_hardware(index, load);
        Ok(())
    }

    /// Live state of deployment `id`: in_flight, latency_s, ttft_s, tokens_per_s (None until
    /// measured), error_rate and window_requests, consecutive_failures, circuit
    /// ("closed" / "open" / "half-open"), retry_in_s, successes, failures, times_opened.
    fn stats<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let s = self.core.stats(self.index(id)?, self.core.now());
        let out = PyDict::new(py);
        out.set_item("in_flight", s.in_flight)?;
        out.set_item("latency_s", s.latency_s)?;
        out.set_item("ttft_s", s.ttft_s)?;
        out.set_item("tokens_per_s", s.tokens_per_s)?;
        out.set_item("error_rate", s.error_rate)?;
        out.set_item("window_requests", s.window_requests)?;
        out.set_item("consecutive_failures", s.consecutive_failures)?;
        out.set_item("circuit", s.circuit.as_str())?;
        out.set_item("retry_in_s", s.retry_in as f64 / 1e9)?;
        out.set_item("successes", s.successes)?;
        out.set_item("failures", s.failures)?;
        out.set_item("times_opened", s.times_opened)?;
        Ok(out)
    }

    /// The cost (picodollars, rounded up) the router expects a request to have on `id`.
    #[pyo3(signature = (id, input_tokens, max_output_tokens=None, stream=false))]
    fn expected_cost(
        &self,
        id: &str,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        stream: bool,
    ) -> PyResult<Picodollars> {
        let features = Features {
            input_tokens,
            max_output_tokens,
            stream,
            ..Features::default()
        };
        Ok(self.core.expected_cost(self.index(id)?, &features))
    }

    /// Every name `plan` knows: deployment groups, then routes.
    fn names(&self) -> Vec<String> {
        (0..self.core.route_count())
            .map(|r| self.core.route_name(r).to_string())
            .collect()
    }

    /// The deployment ids, in the order they were given.
    fn deployment_ids(&self) -> Vec<String> {
        self.core
            .deployments()
            .iter()
            .map(|d| d.id.clone())
            .collect()
    }

    /// The strategy of a group or route, `None` for an unknown name.
    fn strategy(&self, name: &str) -> Option<&'static str> {
        self.core
            .route_index(name)
            .map(|r| self.core.route_strategy(r).as_str())
    }

    /// What a strategy's scores measure (for `--explain`).
    #[staticmethod]
    fn score_meaning(strategy: &str) -> PyResult<&'static str> {
        Ok(Router::score_meaning(
            Strategy::parse(strategy).map_err(to_py)?,
        ))
    }
}

/// The stable hash a weighted route splits request ids by (FNV-1a, then mixed).
#[pyfunction]
fn request_hash(request_id: &str) -> u64 {
    router::request_hash(request_id)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDeploymentSpec>()?;
    m.add_class::<PyRouteSpec>()?;
    m.add_class::<RouterCore>()?;
    m.add_function(wrap_pyfunction!(request_hash, m)?)?;
    m.add("CAPABILITIES", router::caps::NAMES.to_vec())?;
    Ok(())
}
