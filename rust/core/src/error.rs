//! The one error type of the core. The binding maps each variant to a Python exception
//! (see `rust/python/src/errors.rs`); the `code()` is the stable code users see.

use thiserror::Error;

pub type CoreResult<T> = Result<T, CoreError>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// A caller passed something the core cannot work with (a negative count, a bad decimal).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A name (deployment, route, scope, entry) the core does not know.
    #[error("not found: {0}")]
    NotFound(String),
    /// A budget cannot cover the request; `remaining` is in picodollars.
    #[error("budget exceeded for {scope}: {remaining} picodollars remaining")]
    BudgetExceeded { scope: String, remaining: i128 },
    /// Every candidate was filtered out; the message says why.
    #[error("no deployment can serve the request: {0}")]
    NoCandidates(String),
    /// A vector of the wrong length for an index or model.
    #[error("dimension mismatch: expected {expected}, got {got}")]
    Dimension { expected: usize, got: usize },
    /// Reading or writing a file the core owns (snapshots, model weights).
    #[error("storage error: {0}")]
    Storage(String),
    /// Arithmetic that would overflow: money must never wrap.
    #[error("overflow: {0}")]
    Overflow(String),
}

impl CoreError {
    /// The stable error code shown to users (`ERR_...`).
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidArgument(_) => "ERR_INVALID_REQUEST",
            CoreError::NotFound(_) => "ERR_NOT_FOUND",
            CoreError::BudgetExceeded { .. } => "ERR_BUDGET_EXCEEDED",
            CoreError::NoCandidates(_) => "ERR_NO_CANDIDATES",
            CoreError::Dimension { .. } => "ERR_DIMENSION",
            CoreError::Storage(_) => "ERR_STORAGE",
            CoreError::Overflow(_) => "ERR_OVERFLOW",
        }
    }
}
