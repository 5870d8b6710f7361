//! Binding of `hybridfast_core::ratelimit`: `RateLimiter` and its `RateDecision`. Each call
//! takes microseconds under one short lock, so none detaches.

use hybridfast_core::ratelimit::{Decision, Limits, RateLimiter, Window};
use pyo3::prelude::*;

use crate::errors::to_py;

/// The answer to `RateLimiter.acquire`. Windows are `(limit, remaining, reset_ms)` of the
/// tightest scope, or None when no scope limits that kind.
#[pyclass(frozen, module = "hybridfast._core", name = "RateDecision")]
pub struct PyRateDecision {
    #[pyo3(get)]
    allowed: bool,
    #[pyo3(get)]
    denied_scope: Option<String>,
    /// "requests", "tokens" or "parallel".
    #[pyo3(get)]
    denied_kind: Option<&'static str>,
    /// Milliseconds to wait; None when the request can never fit (larger than the limit).
    #[pyo3(get)]
    retry_after_ms: Option<u64>,
    #[pyo3(get)]
    requests: Option<(u64, u64, u64)>,
    #[pyo3(get)]
    tokens: Option<(u64, u64, u64)>,
}

fn window(w: Option<Window>) -> Option<(u64, u64, u64)> {
    w.map(|w| (w.limit, w.remaining, w.reset_ms))
}

impl From<Decision> for PyRateDecision {
    fn from(d: Decision) -> Self {
        PyRateDecision {
            allowed: d.allowed,
            denied_scope: d.denied_scope,
            denied_kind: d.denied_kind.map(|k| k.as_str()),
            retry_after_ms: (d.retry_after_ms != u64::MAX).then_some(d.retry_after_ms),
            requests: window(d.requests),
            tokens: window(d.tokens),
        }
    }
}

#[pymethods]
impl PyRateDecision {
    fn __repr__(&self) -> String {
        format!(
            "RateDecision(allowed={}, denied_scope={:?}, denied_kind={:?}, retry_after_ms={:?})",
            self.allowed, self.denied_scope, self.denied_kind, self.retry_after_ms
        )
    }
}

/// Requests and tokens per minute (exact GCRA) and concurrent requests, per scope; a request
/// is admitted under all the scopes it names or under none.
#[pyclass(frozen, module = "hybridfast._core", name = "RateLimiter")]
pub struct PyRateLimiter {
    inner: RateLimiter,
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    fn new() -> Self {
        PyRateLimiter {
            inner: RateLimiter::new(),
        }
    }

    /// Sets a scope's limits (None: unlimited); raises InvalidArgumentError for 0.
    #[pyo3(signature = (scope, rpm=None, tpm=None, max_parallel=None))]
    fn configure(
        &self,
        scope: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        max_parallel: Option<u64>,
    ) -> PyResult<()> {
        self.inner
            .configure(
                scope,
                Limits {
                    rpm,
                    tpm,
                    max_parallel,
                },
            )
            .map_err(to_py)
    }

    fn remove(&self, scope: &str) {
        self.inner.remove(scope)
    }

    /// (rpm, tpm, max_parallel) of a configured scope.
    fn limits(&self, scope: &str) -> Option<(Option<u64>, Option<u64>, Option<u64>)> {
        self.inner
            .limits(scope)
            .map(|l| (l.rpm, l.tpm, l.max_parallel))
    }

    fn acquire(&self, scopes: Vec<String>, tokens: u64, now_ms: u64) -> PyRateDecision {
        self.inner.acquire(&scopes, tokens, now_ms).into()
    }

    fn settle(&self, scopes: Vec<String>, estimated: u64, actual: u64, now_ms: u64) {
        self.inner.settle(&scopes, estimated, actual, now_ms)
    }

    fn in_flight(&self, scope: &str) -> u64 {
        self.inner.in_flight(scope)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRateDecision>()?;
    m.add_class::<PyRateLimiter>()
}
