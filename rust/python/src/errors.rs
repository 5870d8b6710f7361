//! One exception hierarchy, rooted at `hybridfast.HybridfastError`, and the one place where
//! a core error becomes a Python exception: each exception carries the stable `code` and
//! its `details`, set here, so Python code reads them instead of re-deriving them.
//!
//! Also [`enter_core`], the one way a bulk call leaves the interpreter.

use hybridfast_core::{CoreError, CoreResult};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{create_exception, PyErr, PyTypeInfo};

create_exception!(
    hybridfast,
    HybridfastError,
    PyException,
    "Base of every hybridfast error."
);
create_exception!(
    hybridfast,
    InvalidArgumentError,
    HybridfastError,
    "A value the core cannot use."
);
create_exception!(
    hybridfast,
    NotFoundError,
    HybridfastError,
    "A name the core does not know."
);
create_exception!(
    hybridfast,
    BudgetExceededError,
    HybridfastError,
    "A budget cannot cover the request."
);
create_exception!(
    hybridfast,
    NoCandidatesError,
    HybridfastError,
    "Every deployment was filtered out."
);
create_exception!(
    hybridfast,
    DimensionError,
    HybridfastError,
    "A vector of the wrong length."
);
create_exception!(
    hybridfast,
    StorageError,
    HybridfastError,
    "A file the core owns could not be read or written."
);
create_exception!(
    hybridfast,
    OverflowError,
    HybridfastError,
    "Arithmetic on money would overflow."
);

/// Runs bulk core work without the interpreter and maps its error: the one way a call
/// that can take longer than a few microseconds (a batch, a file, a wait) crosses the
/// boundary. Callers copy what they need out of Python objects first (the closure is
/// `Send`, so it cannot hold a borrowed Python object), as polars' `enter_polars` does;
/// other threads and the event loop run meanwhile.
pub fn enter_core<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: Send + FnOnce() -> CoreResult<T>,
{
    py.detach(work).map_err(to_py)
}

/// Converts a core error at the boundary: `result.map_err(to_py)?`. The exception gets
/// `code` (the stable `ERR_...` users see) and `details` (a dict: `scope` and `remaining`
/// picodollars for a budget refusal, `expected` and `got` for a dimension mismatch; empty
/// otherwise). A budget refusal also has `scope` and `remaining` as attributes.
#[cold]
#[inline(never)]
pub fn to_py(err: CoreError) -> PyErr {
    let code = err.code();
    let message = err.to_string();
    let py_err = match &err {
        CoreError::InvalidArgument(_) => InvalidArgumentError::new_err(message),
        CoreError::NotFound(_) => NotFoundError::new_err(message),
        CoreError::BudgetExceeded { .. } => BudgetExceededError::new_err(message),
        CoreError::NoCandidates(_) => NoCandidatesError::new_err(message),
        CoreError::Dimension { .. } => DimensionError::new_err(message),
        CoreError::Storage(_) => StorageError::new_err(message),
        CoreError::Overflow(_) => OverflowError::new_err(message),
    };
    Python::attach(|py| {
        // Setting attributes on a fresh exception object cannot fail in practice; if it
        // did, the exception type and its class-level `code` still say what happened.
        let _ = annotate(py, &py_err, code, &err);
    });
    py_err
}

fn annotate(py: Python<'_>, py_err: &PyErr, code: &str, err: &CoreError) -> PyResult<()> {
    let value = py_err.value(py);
    let details = PyDict::new(py);
    match err {
        CoreError::BudgetExceeded { scope, remaining } => {
            details.set_item("scope", scope)?;
            details.set_item("remaining", *remaining)?;
            value.setattr("scope", scope)?;
            value.setattr("remaining", *remaining)?;
        }
        CoreError::Dimension { expected, got } => {
            details.set_item("expected", *expected)?;
            details.set_item("got", *got)?;
        }
        _ => {}
    }
    value.setattr("code", code)?;
    value.setattr("details", details)?;
    Ok(())
}

/// Registers an exception type with its stable code as a class attribute, so an
/// exception raised from Python (`StorageError("...")`) has the same `code` as one
/// raised by the core.
fn add_exception<T: PyTypeInfo>(m: &Bound<'_, PyModule>, name: &str, code: &str) -> PyResult<()> {
    let py = m.py();
    let ty = py.get_type::<T>();
    ty.setattr("code", code)?;
    m.add(name, ty)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<HybridfastError>();
    // What an error that is not the core's own carries (a bug, a failed import).
    base.setattr("code", "ERR_INTERNAL")?;
    base.setattr("details", PyDict::new(py))?;
    m.add("HybridfastError", base)?;
    let none = String::new;
    add_exception::<InvalidArgumentError>(
        m,
        "InvalidArgumentError",
        CoreError::InvalidArgument(none()).code(),
    )?;
    add_exception::<NotFoundError>(m, "NotFoundError", CoreError::NotFound(none()).code())?;
    let budget = CoreError::BudgetExceeded {
        scope: none(),
        remaining: 0,
    };
    add_exception::<BudgetExceededError>(m, "BudgetExceededError", budget.code())?;
    add_exception::<NoCandidatesError>(
        m,
        "NoCandidatesError",
        CoreError::NoCandidates(none()).code(),
    )?;
    let dimension = CoreError::Dimension {
        expected: 0,
        got: 0,
    };
    add_exception::<DimensionError>(m, "DimensionError", dimension.code())?;
    add_exception::<StorageError>(m, "StorageError", CoreError::Storage(none()).code())?;
    add_exception::<OverflowError>(m, "OverflowError", CoreError::Overflow(none()).code())?;
    Ok(())
}
