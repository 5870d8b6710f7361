//! hybridfast's native core.
//!
//! Everything here is pure computation or shared in-memory state: it knows nothing about
//! HTTP, asyncio, YAML or Python. The `hybridfast-python` crate is a thin binding over it.
//!
//! - [`money`]: exact integer money (picodollars) and the cost of a request's usage.
//! - [`router`]: scores and orders candidate deployments from live state.
//! - [`ledger`]: cost accounting, budgets with reserve/settle, windowed aggregates.
//! - [`cache`]: vector index, hashing embedder, exact-match table.
//! - [`embed`]: the local neural embedding model.
//! - [`sched`]: admission in front of a concurrency limit: priorities, fairness, a bounded queue.
//! - [`rows`]: a SQLite file of rows written in batches without Python (the request log).

pub mod cache;
pub mod embed;
pub mod error;
pub mod ledger;
pub mod money;
pub mod ratelimit;
pub mod router;
pub mod rows;
pub mod sched;

pub use error::{CoreError, CoreResult};
