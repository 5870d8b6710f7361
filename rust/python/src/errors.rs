//! One exception hierarchy, rooted at `hybridfast.HybridfastError`, and the one place where
//! a core error becomes a Python exception. Each exception carries the stable `code`.

use hybridfast_core::CoreError;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};

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

/// Converts a core error at the boundary: `result.map_err(to_py)?`.
#[cold]
#[inline(never)]
pub fn to_py(err: CoreError) -> PyErr {
    let code = err.code();
    let message = err.to_string();
    let py_err = match err {
        CoreError::InvalidArgument(_) => InvalidArgumentError::new_err(message),
        CoreError::NotFound(_) => NotFoundError::new_err(message),
        CoreError::BudgetExceeded { .. } => BudgetExceededError::new_err(message),
        CoreError::NoCandidates(_) => NoCandidatesError::new_err(message),
        CoreError::Dimension { .. } => DimensionError::new_err(message),
        CoreError::Storage(_) => StorageError::new_err(message),
        CoreError::Overflow(_) => OverflowError::new_err(message),
    };
    Python::attach(|py| {
        // Best effort: the code is a convenience, the exception type already says it.
        let _ = py_err.value(py).setattr("code", code);
    });
    py_err
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HybridfastError", py.get_type::<HybridfastError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("BudgetExceededError", py.get_type::<BudgetExceededError>())?;
    m.add("NoCandidatesError", py.get_type::<NoCandidatesError>())?;
    m.add("DimensionError", py.get_type::<DimensionError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("OverflowError", py.get_type::<OverflowError>())?;
    Ok(())
}
