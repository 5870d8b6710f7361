//! Binding of `hybridfast_core::sched`: `FairQueue`, the admission queue in front of a
//! concurrency limit. Each call takes microseconds under one short lock, so none detaches.

use hybridfast_core::sched::{Admission, FairQueue};
use pyo3::prelude::*;

/// A concurrency limit with a bounded queue ordered by priority (lower first), fair between
/// tenants within a priority, with starvation of lower priorities bounded.
#[pyclass(frozen, module = "hybridfast._core", name = "FairQueue")]
pub struct PyFairQueue {
    inner: FairQueue,
}

#[pymethods]
impl PyFairQueue {
    #[new]
    #[pyo3(signature = (limit, max_queue, starvation_ms))]
    fn new(limit: usize, max_queue: usize, starvation_ms: u64) -> Self {
        PyFairQueue {
            inner: FairQueue::new(limit, max_queue, starvation_ms),
        }
    }

    /// 0: start now; a positive ticket: wait for `release` to return it; -1: the queue is full.
    fn acquire(&self, tenant: &str, priority: u32, now_ms: u64) -> i64 {
        match self.inner.acquire(tenant, priority, now_ms) {
            Admission::Start => 0,
            // Tickets count up from 1 per queue: far below i64::MAX.
            Admission::Wait(ticket) => ticket as i64,
            Admission::Full => -1,
        }
    }

    /// A running request finished: the ticket that now holds its slot, if anyone waited.
    fn release(&self, now_ms: u64) -> Option<u64> {
        self.inner.release(now_ms)
    }

    /// Withdraw a waiting ticket; False when it already holds a slot (release it then).
    fn cancel(&self, ticket: u64) -> bool {
        self.inner.cancel(ticket)
    }

    fn set_limit(&self, limit: usize) {
        self.inner.set_limit(limit)
    }

    /// (running, waiting).
    fn load(&self) -> (usize, usize) {
        self.inner.load()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFairQueue>()
}
