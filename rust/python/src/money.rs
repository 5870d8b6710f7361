//! `Price`, `parse_usd`, `format_usd`, `gpu_time_cost`: exact money for Python.

use hybridfast_core::money::{self, Picodollars, Usage};
use pyo3::prelude::*;

use crate::errors::to_py;

/// A deployment's prices in picodollars per token (= dollars per million tokens × 10⁶).
#[pyclass(frozen, eq, module = "hybridfast._core")]
#[derive(Clone, Copy, PartialEq)]
pub struct Price {
    pub inner: money::Price,
}

#[pymethods]
impl Price {
    #[new]
    #[pyo3(signature = (input=0, output=0, cached_input=None, cache_write=None))]
    fn new(
        input: Picodollars,
        output: Picodollars,
        cached_input: Option<Picodollars>,
        cache_write: Option<Picodollars>,
    ) -> Self {
        // A provider without a prompt cache bills cached and written tokens as plain input.
        let inner = money::Price {
            input,
            output,
            cached_input: cached_input.unwrap_or(input),
            cache_write: cache_write.unwrap_or(input),
        };
        Price { inner }
    }

    /// Builds a price from decimal dollars per million tokens, given as strings so that
    /// no float ever touches the amount (`Price.per_mtok("2.5", "10")`).
    #[staticmethod]
    #[pyo3(signature = (input, output, cached_input=None, cache_write=None))]
    fn per_mtok(
        input: &str,
        output: &str,
        cached_input: Option<&str>,
        cache_write: Option<&str>,
    ) -> PyResult<Self> {
        // Dollars per Mtok × 10¹² picodollars / 10⁶ tokens = picodollars per token × 10⁶.
        let per_token = |usd: &str| money::parse_usd(usd).map(|p| p / 1_000_000).map_err(to_py);
        let input = per_token(input)?;
        let output = per_token(output)?;
        let cached_input = cached_input.map(per_token).transpose()?;
        let cache_write = cache_write.map(per_token).transpose()?;
        Ok(Self::new(input, output, cached_input, cache_write))
    }

    #[getter]
    fn input(&self) -> Picodollars {
        self.inner.input
    }
    #[getter]
    fn output(&self) -> Picodollars {
        self.inner.output
    }
    #[getter]
    fn cached_input(&self) -> Picodollars {
        self.inner.cached_input
    }
    #[getter]
    fn cache_write(&self) -> Picodollars {
        self.inner.cache_write
    }

    /// The exact cost in picodollars of a request's token usage.
    #[pyo3(signature = (input_tokens=0, output_tokens=0, cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0))]
    fn cost(
        &self,
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        cache_write_tokens: u64,
        reasoning_tokens: u64,
    ) -> PyResult<Picodollars> {
        let usage = Usage {
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
        };
        self.inner.cost(&usage).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        let p = &self.inner;
        format!(
            "Price(input={}, output={}, cached_input={}, cache_write={})",
            p.input, p.output, p.cached_input, p.cache_write
        )
    }
}

/// Parses a decimal dollar string exactly into picodollars.
#[pyfunction]
fn parse_usd(text: &str) -> PyResult<Picodollars> {
    money::parse_usd(text).map_err(to_py)
}

/// Formats picodollars as an exact decimal dollar string (`1500000` → `"0.0000015"`).
#[pyfunction]
fn format_usd(picodollars: i128) -> String {
    money::format_usd(picodollars)
}

/// The charge in picodollars for `seconds` of a local GPU priced at `per_second`
/// picodollars per GPU-second: the exact product of the price and the time (the float
/// as given), rounded to the picodollar (half to even). Negative or non-finite times are
/// refused.
#[pyfunction]
fn gpu_time_cost(per_second: Picodollars, seconds: f64) -> PyResult<Picodollars> {
    money::gpu_time_cost(per_second, seconds).map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Price>()?;
    m.add_function(wrap_pyfunction!(gpu_time_cost, m)?)?;
    m.add_function(wrap_pyfunction!(parse_usd, m)?)?;
    m.add_function(wrap_pyfunction!(format_usd, m)?)?;
    m.add("PICODOLLARS_PER_USD", money::PICOS_PER_USD)?;
    Ok(())
}
