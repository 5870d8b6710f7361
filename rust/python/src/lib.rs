//! `hybridfast._core`: the PyO3 binding of `hybridfast-core`.
//!
//! Each submodule only converts types and maps errors; the logic lives in the core crate.
//! Everything is registered flat on `_core`, and `python/hybridfast/_core.pyi` documents it.

use pyo3::prelude::*;

mod cache;
mod embed;
mod errors;
mod ledger;
mod money;
mod ratelimit;
mod router;
mod rows;
mod sched;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    money::register(m)?;
    ratelimit::register(m)?;
    router::register(m)?;
    ledger::register(m)?;
    cache::register(m)?;
    embed::register(m)?;
    sched::register(m)?;
    rows::register(m)?;
    Ok(())
}
