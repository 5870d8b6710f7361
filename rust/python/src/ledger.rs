//! Binding of `hybridfast_core::ledger`: `Ledger` (the books) and `SqliteJournal` (the
//! durable store's writer). Per-request calls take microseconds and keep the interpreter;
//! waiting for work and writing to disk release it.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hybridfast_core::ledger::{
    self,
    store::{SqliteStore, StoredBudget},
    BudgetSpec, Dim, Entry, Scope, Subject, Summary, Totals, Window,
};
use hybridfast_core::money::{Picodollars, Usage};
use hybridfast_core::CoreError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{enter_core, to_py};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cold]
#[inline(never)]
fn invalid(what: &str, value: &str) -> PyErr {
    to_py(CoreError::InvalidArgument(format!(
        "unknown {what}: {value:?}"
    )))
}

fn scope(text: &str) -> PyResult<Scope> {
    Scope::parse(text).ok_or_else(|| invalid("budget scope", text))
}

fn window(text: &str) -> PyResult<Window> {
    Window::parse(text).ok_or_else(|| invalid("window", text))
}

/// A budget as a tuple: `(scope, name, window, limit, soft_fraction)`.
type BudgetTuple = (String, Option<String>, String, Picodollars, f64);

/// A budget's state: `(scope, name, window, limit, soft_fraction, window_start_ms, spent,
/// reserved)`.
type BudgetStatusTuple = (
    String,
    Option<String>,
    String,
    Picodollars,
    f64,
    i64,
    i128,
    i128,
);

fn spec(b: BudgetTuple) -> PyResult<BudgetSpec> {
    Ok(BudgetSpec {
        scope: scope(&b.0)?,
        name: b.1,
        window: window(&b.2)?,
        limit: b.3,
        soft_fraction: b.4,
    })
}

/// The ledger's books in the native core: budgets with reserve/settle/release, hourly
/// aggregates by key, user, team, model group, deployment, provider and route (`i128`
/// sums), and the queue of settled entries waiting for the store. Thread-safe.
#[pyclass(frozen, module = "hybridfast._core")]
pub struct Ledger {
    inner: ledger::Ledger,
}

#[pymethods]
impl Ledger {
    /// `budgets`: `(scope, name, window, limit_picodollars, soft_fraction)` tuples.
    #[new]
    #[pyo3(signature = (budgets=Vec::new(), now_ms=None))]
    fn new(budgets: Vec<BudgetTuple>, now_ms: Option<i64>) -> PyResult<Self> {
        let specs = budgets
            .into_iter()
            .map(spec)
            .collect::<PyResult<Vec<_>>>()?;
        let inner =
            ledger::Ledger::new(specs, now_ms.unwrap_or_else(self::now_ms)).map_err(to_py)?;
        Ok(Ledger { inner })
    }

    /// Adds a budget, or changes the limit of the one with the same scope, name and window.
    #[pyo3(signature = (scope, name, window, limit, soft_fraction=0.8, now_ms=None))]
    fn set_budget(
        &self,
        scope: &str,
        name: Option<String>,
        window: &str,
        limit: Picodollars,
        soft_fraction: f64,
        now_ms: Option<i64>,
    ) -> PyResult<()> {
        let spec = spec((
            scope.to_string(),
            name,
            window.to_string(),
            limit,
            soft_fraction,
        ))?;
        self.inner
            .set_budget(spec, now_ms.unwrap_or_else(self::now_ms))
            .map_err(to_py)
    }

    /// Removes a budget; False when there was none.
    #[pyo3(signature = (scope, name, window))]
    fn remove_budget(&self, scope: &str, name: Option<&str>, window: &str) -> PyResult<bool> {
        Ok(self
            .inner
            .remove_budget(self::scope(scope)?, name, self::window(window)?))
    }

    /// Every budget's state now: `(scope, name, window, limit, soft_fraction,
    /// window_start_ms, spent, reserved)`.
    #[pyo3(signature = (now_ms=None))]
    fn budgets(&self, now_ms: Option<i64>) -> Vec<BudgetStatusTuple> {
        let now = now_ms.unwrap_or_else(self::now_ms);
        self.inner
            .budgets(now)
            .into_iter()
            .map(|b| {
                (
                    b.spec.scope.as_str().to_string(),
                    b.spec.name,
                    b.spec.window.as_str().to_string(),
                    b.spec.limit,
                    b.spec.soft_fraction,
                    b.window_start,
                    b.spent,
                    b.reserved,
                )
            })
            .collect()
    }

    /// Holds `amount` picodollars against every budget that applies, all or none, and
    /// returns the hold's handle. Raises `BudgetExceededError` with `scope` (the tightest
    /// budget's label) and `remaining` (picodollars) attributes.
    #[pyo3(signature = (key, user, team, model_group, amount, now_ms=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the Python signature
    fn reserve(
        &self,
        key: Option<&str>,
        user: Option<&str>,
        team: Option<&str>,
        model_group: Option<&str>,
        amount: Picodollars,
        now_ms: Option<i64>,
    ) -> PyResult<u64> {
        let subject = Subject {
            key,
            user,
            team,
            model_group,
        };
        let now = now_ms.unwrap_or_else(self::now_ms);
        self.inner.reserve(&subject, amount, now).map_err(to_py)
    }

    /// Drops a hold without spending; False when it was already settled or released.
    fn release(&self, handle: u64) -> bool {
        self.inner.release(handle)
    }

    /// Books a finished request and queues it for the store; returns `(seq, soft_crossed)`:
    /// the entry's sequence number (durable once the store reports it) and the indexes
    /// (in `budgets()`) of budgets that just crossed their soft limit. `handle` 0: no hold.
    ///
    /// `record` is read by attribute, the shape of `hybridfast.types.LedgerRecord` (with
    /// its `caller` and `usage`): one object crosses the boundary, not 25 arguments. A
    /// record whose fields have the wrong type or sign (negative tokens, a float count)
    /// is refused with `InvalidArgumentError` and books nothing.
    #[pyo3(signature = (handle, record, model_group=None))]
    fn settle(
        &self,
        handle: u64,
        record: &Bound<'_, PyAny>,
        model_group: Option<String>,
    ) -> PyResult<(u64, Vec<usize>)> {
        let record: SettleRecord = record.extract().map_err(bad_record)?;
        let settled = self
            .inner
            .settle(handle, record.into_entry(model_group))
            .map_err(to_py)?;
        Ok((settled.seq, settled.soft_crossed))
    }

    /// The smallest amount left across the budgets that apply (None: no budget applies).
    #[pyo3(signature = (key, user, team, model_group=None, now_ms=None))]
    fn remaining(
        &self,
        key: Option<&str>,
        user: Option<&str>,
        team: Option<&str>,
        model_group: Option<&str>,
        now_ms: Option<i64>,
    ) -> Option<i128> {
        let subject = Subject {
            key,
            user,
            team,
            model_group,
        };
        self.inner
            .remaining(&subject, now_ms.unwrap_or_else(self::now_ms))
    }

    /// Totals by `by` (total, key, user, team, model, deployment, provider, route) and,
    /// when `period` is given, by hour/day/month, over `since_ms <= time < until_ms`
    /// (whole hours). Rows: `(group, period_start_ms, requests, errors, estimated,
    /// cache_hits, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
    /// reasoning_tokens, cost, saved_cost)`.
    #[pyo3(signature = (by="total", period=None, since_ms=None, until_ms=None))]
    fn report<'py>(
        &self,
        py: Python<'py>,
        by: &str,
        period: Option<&str>,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let dim = Dim::parse(by).ok_or_else(|| invalid("report dimension", by))?;
        let period = period.map(window).transpose()?;
        let rows = self.inner.report(
            dim,
            period,
            since_ms.unwrap_or(i64::MIN),
            until_ms.unwrap_or(i64::MAX),
        );
        rows.into_iter()
            .map(|r| {
                let t = r.totals;
                let counts = (t.requests, t.errors, t.estimated, t.cache_hits);
                let tokens = (
                    t.input_tokens,
                    t.output_tokens,
                    t.cached_input_tokens,
                    t.cache_write_tokens,
                    t.reasoning_tokens,
                );
                flat_tuple(
                    py,
                    [
                        (r.group, r.period_start).into_pyobject(py)?,
                        counts.into_pyobject(py)?,
                        tokens.into_pyobject(py)?,
                        (t.cost, t.saved_cost).into_pyobject(py)?,
                    ],
                )
            })
            .collect()
    }

    /// Rebuilds from a store's summary row (the `GROUP BY` of `SqliteJournal`'s query, in
    /// the same column order): adds it to the aggregates and current budget windows.
    #[pyo3(signature = (
        hour_ms, key, user, team, model_group, deployment, provider, route, requests, errors,
        estimated, cache_hits, input_tokens, output_tokens, cached_input_tokens,
        cache_write_tokens, reasoning_tokens, cost, saved_cost
    ))]
    #[allow(clippy::too_many_arguments)]
    fn load_summary(
        &self,
        hour_ms: i64,
        key: Option<String>,
        user: Option<String>,
        team: Option<String>,
        model_group: Option<String>,
        deployment: Option<String>,
        provider: Option<String>,
        route: Option<String>,
        requests: u64,
        errors: u64,
        estimated: u64,
        cache_hits: u64,
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        cache_write_tokens: u64,
        reasoning_tokens: u64,
        cost: i128,
        saved_cost: i128,
    ) {
        self.inner.load(&Summary {
            hour_ms,
            key,
            user,
            team,
            model_group,
            deployment,
            provider,
            route,
            totals: Totals {
                requests,
                errors,
                estimated,
                cache_hits,
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cache_write_tokens,
                reasoning_tokens,
                cost,
                saved_cost,
            },
        });
    }

    /// Takes up to `max` settled entries waiting for the store (waiting up to `timeout_s`
    /// for one, without the interpreter), as tuples in the store's column order with the
    /// seq first. For stores written from Python (PostgreSQL).
    #[pyo3(signature = (max=4096, timeout_s=0.0))]
    fn take_pending<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        timeout_s: f64,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
        let entries = enter_core(py, || Ok(self.inner.take_pending(max, timeout)))?;
        entries.into_iter().map(|e| entry_tuple(py, e)).collect()
    }

    /// Entries settled but not yet taken by the store's writer.
    fn pending_len(&self) -> usize {
        self.inner.pending_len()
    }

    /// Wakes a writer waiting in `take_pending` or `SqliteJournal.flush`.
    fn wake(&self) {
        self.inner.wake();
    }
}

/// A record the books cannot read, as the core's own error: the message follows the
/// extraction's causes down to the field (`SettleRecord.usage` → `UsageFields.input_tokens`
/// → "can't convert negative int to unsigned").
#[cold]
#[inline(never)]
fn bad_record(err: PyErr) -> PyErr {
    let message = Python::attach(|py| {
        let mut parts = vec![err.value(py).to_string()];
        let mut cause = err.cause(py);
        while let Some(next) = cause {
            parts.push(next.value(py).to_string());
            cause = next.cause(py);
        }
        parts.join(": ")
    });
    to_py(CoreError::InvalidArgument(format!(
        "ledger record: {message}"
    )))
}

/// Who a ledger record is for (`hybridfast.types.Caller`).
#[derive(FromPyObject)]
struct CallerFields {
    #[pyo3(attribute)]
    key_name: Option<String>,
    #[pyo3(attribute)]
    user: Option<String>,
    #[pyo3(attribute)]
    team: Option<String>,
    #[pyo3(attribute)]
    tags: Vec<String>,
}

/// A record's token counts (`hybridfast.types.Usage`).
#[derive(FromPyObject)]
struct UsageFields {
    #[pyo3(attribute)]
    input_tokens: u64,
    #[pyo3(attribute)]
    output_tokens: u64,
    #[pyo3(attribute)]
    cached_input_tokens: u64,
    #[pyo3(attribute)]
    cache_write_tokens: u64,
    #[pyo3(attribute)]
    reasoning_tokens: u64,
    #[pyo3(attribute)]
    estimated: bool,
}

/// One request's line as the pipeline hands it over (`hybridfast.types.LedgerRecord`).
#[derive(FromPyObject)]
struct SettleRecord {
    #[pyo3(attribute)]
    request_id: String,
    #[pyo3(attribute)]
    caller: CallerFields,
    #[pyo3(attribute)]
    route: String,
    #[pyo3(attribute)]
    deployment: Option<String>,
    #[pyo3(attribute)]
    provider: Option<String>,
    #[pyo3(attribute)]
    model: Option<String>,
    #[pyo3(attribute)]
    usage: UsageFields,
    #[pyo3(attribute)]
    cost: Picodollars,
    #[pyo3(attribute)]
    saved_cost: Picodollars,
    #[pyo3(attribute)]
    latency_ms: f64,
    #[pyo3(attribute)]
    ttft_ms: Option<f64>,
    #[pyo3(attribute)]
    status: u16,
    #[pyo3(attribute)]
    cache: String,
    #[pyo3(attribute)]
    fallbacks: u32,
    /// Seconds since the Unix epoch (`time.time()`).
    #[pyo3(attribute)]
    timestamp: f64,
    /// The request this one is a step of (a prompt chain's id), usually None.
    #[pyo3(attribute)]
    parent_id: Option<String>,
}

impl SettleRecord {
    fn into_entry(self, model_group: Option<String>) -> Entry {
        let (caller, usage) = (self.caller, self.usage);
        Entry {
            seq: 0,
            // Truncated to the millisecond, as `int(timestamp * 1000)` is.
            ts_ms: (self.timestamp * 1000.0) as i64,
            request_id: self.request_id,
            key: caller.key_name,
            user: caller.user,
            team: caller.team,
            tags: caller.tags.join(","),
            route: self.route,
            deployment: self.deployment,
            model_group,
            provider: self.provider,
            model: self.model,
            usage: Usage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cached_input_tokens: usage.cached_input_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                reasoning_tokens: usage.reasoning_tokens,
            },
            cost: self.cost,
            saved_cost: self.saved_cost,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            status: self.status,
            cache: self.cache,
            fallbacks: self.fallbacks,
            estimated: usage.estimated,
            parent_id: self.parent_id,
        }
    }
}

/// The budgets a shared counter (Redis, PostgreSQL) keeps, and which of them apply to a
/// request in which window: the same matching and calendar as `Ledger`, so the counters
/// in every instance and the books in this one count the same windows. `Total` windows
/// are `(0, 0)`.
#[pyclass(frozen, module = "hybridfast._core")]
pub struct BudgetWindows {
    specs: Vec<BudgetSpec>,
}

#[pymethods]
impl BudgetWindows {
    /// `budgets`: `(scope, name, window, limit_picodollars, soft_fraction)` tuples.
    #[new]
    fn new(budgets: Vec<BudgetTuple>) -> PyResult<Self> {
        let specs = budgets
            .into_iter()
            .map(spec)
            .collect::<PyResult<Vec<_>>>()?;
        Ok(BudgetWindows { specs })
    }

    /// `(index, window_start_ms, window_end_ms)` of every budget that applies, in the
    /// order they were given (`index` into that list).
    #[pyo3(signature = (key, user, team, model_group, now_ms=None))]
    fn applicable(
        &self,
        key: Option<&str>,
        user: Option<&str>,
        team: Option<&str>,
        model_group: Option<&str>,
        now_ms: Option<i64>,
    ) -> Vec<(usize, i64, i64)> {
        let subject = Subject {
            key,
            user,
            team,
            model_group,
        };
        let now = now_ms.unwrap_or_else(self::now_ms);
        ledger::counter_windows(&self.specs, &subject, now)
            .into_iter()
            .map(|w| (w.index, w.start, w.end))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.specs.len()
    }
}

/// `(start_ms, end_ms)` of the `window` (hour, day, month, total) holding `now_ms`, as a
/// shared counter keys it: `total` is `(0, 0)`.
#[pyfunction]
#[pyo3(signature = (window, now_ms=None))]
fn budget_window(window: &str, now_ms: Option<i64>) -> PyResult<(i64, i64)> {
    let now = now_ms.unwrap_or_else(self::now_ms);
    Ok(self::window(window)?.counter_bounds(now))
}

fn entry_tuple(py: Python<'_>, e: Entry) -> PyResult<Bound<'_, PyTuple>> {
    let u = e.usage;
    let head = (
        e.seq,
        e.ts_ms,
        e.request_id,
        e.key,
        e.user,
        e.team,
        e.tags,
        e.route,
    );
    let mid = (e.deployment, e.model_group, e.provider, e.model);
    let usage = (
        u.input_tokens,
        u.output_tokens,
        u.cached_input_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
    );
    let tail = (
        e.cost,
        e.saved_cost,
        e.latency_ms,
        e.ttft_ms,
        e.status,
        e.cache,
        e.fallbacks,
        e.estimated,
        e.parent_id,
    );
    flat_tuple(
        py,
        [
            head.into_pyobject(py)?,
            mid.into_pyobject(py)?,
            usage.into_pyobject(py)?,
            tail.into_pyobject(py)?,
        ],
    )
}

/// One tuple from several (PyO3 converts tuples of at most twelve items).
fn flat_tuple<'py, const N: usize>(
    py: Python<'py>,
    parts: [Bound<'py, PyTuple>; N],
) -> PyResult<Bound<'py, PyTuple>> {
    let items: Vec<Bound<'py, PyAny>> = parts.iter().flat_map(|part| part.iter()).collect();
    PyTuple::new(py, items)
}

/// The durable store in a SQLite file (WAL). `flush` is the background writer's step: it
/// takes every entry settled since the last one and writes them in one transaction (group
/// commit), without the interpreter.
#[pyclass(frozen, module = "hybridfast._core")]
pub struct SqliteJournal {
    store: Mutex<SqliteStore>,
    path: String,
    synchronous_full: bool,
    // A second connection for checkpoints, opened by the first `checkpoint` call.
    checkpointer: Mutex<Option<SqliteStore>>,
}

impl SqliteJournal {
    fn store(&self) -> MutexGuard<'_, SqliteStore> {
        // A panic while writing leaves the connection usable (the transaction rolled back).
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[pymethods]
impl SqliteJournal {
    /// Opens (creating) the ledger file; `synchronous_full`: a commit is on stable storage
    /// (survives a power cut), else it survives the process being killed.
    #[new]
    #[pyo3(signature = (path, synchronous_full=true, read_only=false))]
    fn new(py: Python<'_>, path: &str, synchronous_full: bool, read_only: bool) -> PyResult<Self> {
        let store = enter_core(py, || {
            if read_only {
                SqliteStore::open_read_only(path)
            } else {
                SqliteStore::open(path, synchronous_full)
            }
        })?;
        Ok(SqliteJournal {
            store: Mutex::new(store),
            path: path.to_owned(),
            synchronous_full,
            checkpointer: Mutex::new(None),
        })
    }

    /// Stops commits from copying the write-ahead log into the database file (SQLite's
    /// automatic checkpoint, milliseconds with its fsyncs every ~1000 pages): the caller
    /// then calls `checkpoint` from another thread, so `flush` stays microseconds.
    fn leave_checkpoints_to_caller(&self, py: Python<'_>) -> PyResult<()> {
        enter_core(py, || self.store().set_autocheckpoint(0))
    }

    /// Copies the committed write-ahead log into the database file over a second
    /// connection, without blocking `flush` (a PASSIVE checkpoint).
    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        enter_core(py, || {
            let mut slot = self
                .checkpointer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.is_none() {
                *slot = Some(SqliteStore::open(&self.path, self.synchronous_full)?);
            }
            match slot.as_ref() {
                Some(conn) => conn.checkpoint(),
                None => Ok(()),
            }
        })
    }

    /// Waits up to `timeout_s` for settled entries, writes up to `max` of them in one
    /// transaction and returns the highest seq now durable (0: nothing was waiting). On a
    /// write error the entries go back to the front of the queue and `StorageError` is
    /// raised; the next flush retries them.
    #[pyo3(signature = (ledger, max=65536, timeout_s=0.0))]
    fn flush(&self, py: Python<'_>, ledger: &Ledger, max: usize, timeout_s: f64) -> PyResult<u64> {
        let timeout = Duration::from_secs_f64(timeout_s.max(0.0));
        enter_core(py, || {
            let batch = ledger.inner.take_pending(max, timeout);
            let Some(last) = batch.last().map(|e| e.seq) else {
                return Ok(0);
            };
            match self.store().append(&batch) {
                Ok(()) => {
                    ledger.inner.mark_durable(last);
                    Ok(last)
                }
                Err(err) => {
                    ledger.inner.requeue(batch);
                    Err(err)
                }
            }
        })
    }

    /// Rebuilds `ledger`'s aggregates and budget state from every stored entry; returns
    /// how many entries were read.
    fn load_into(&self, py: Python<'_>, ledger: &Ledger) -> PyResult<u64> {
        enter_core(py, || self.store().load_into(&ledger.inner))
    }

    /// Budgets changed through the admin API: `(scope, name or "", window, limit,
    /// soft_fraction, deleted)`.
    fn budgets(&self, py: Python<'_>) -> PyResult<Vec<StoredBudget>> {
        enter_core(py, || self.store().budgets())
    }

    /// Keeps a budget change (or, with `deleted`, a removal) in the file.
    #[pyo3(signature = (scope, name, window, limit, soft_fraction, deleted=false))]
    #[allow(clippy::too_many_arguments)] // mirrors the table's columns
    fn save_budget(
        &self,
        py: Python<'_>,
        scope: String,
        name: Option<String>,
        window: String,
        limit: Picodollars,
        soft_fraction: f64,
        deleted: bool,
    ) -> PyResult<()> {
        let row = (
            scope,
            name.unwrap_or_default(),
            window,
            limit,
            soft_fraction,
            deleted,
        );
        enter_core(py, || self.store().save_budget(&row))
    }

    /// Up to `limit` stored entries with row id above `after_id` and `since_ms <= ts_ms <
    /// until_ms` (and, given `parent_id`, one prompt chain's steps only), in order: tuples of
    /// the row id then the store's columns (page on with the last row's id).
    #[pyo3(signature = (since_ms=None, until_ms=None, after_id=0, limit=4096, parent_id=None))]
    fn export_page<'py>(
        &self,
        py: Python<'py>,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        after_id: i64,
        limit: usize,
        parent_id: Option<String>,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let (since, until) = (since_ms.unwrap_or(i64::MIN), until_ms.unwrap_or(i64::MAX));
        let rows = enter_core(py, || {
            self.store()
                .export_page(since, until, after_id, limit, parent_id.as_deref())
        })?;
        rows.into_iter()
            .map(|row| {
                entry_tuple(
                    py,
                    Entry {
                        seq: row.id as u64,
                        ..row.entry
                    },
                )
            })
            .collect()
    }

    /// The number of stored entries.
    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        enter_core(py, || self.store().count())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ledger>()?;
    m.add_class::<SqliteJournal>()?;
    m.add_class::<BudgetWindows>()?;
    m.add_function(wrap_pyfunction!(budget_window, m)?)?;
    m.add("LEDGER_SCHEMA", ledger::store::SCHEMA)?;
    m.add("LEDGER_SUMMARY_QUERY", ledger::store::SUMMARY_QUERY)?;
    Ok(())
}
