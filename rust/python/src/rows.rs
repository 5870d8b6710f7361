//! Binding of `hybridfast_core::rows`: `SqliteRows`, one connection to a rows file. Values
//! are converted while the interpreter is held, once per call; the SQLite work releases it.

use std::sync::{Mutex, MutexGuard};

use hybridfast_core::rows::{RowStore, Value};
use hybridfast_core::CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString, PyTuple};

use crate::errors::{enter_core, to_py};

fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        Ok(Value::Null)
    } else if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyInt>() {
        Ok(Value::Integer(obj.extract()?))
    } else if obj.is_instance_of::<PyFloat>() {
        Ok(Value::Real(obj.extract()?))
    } else if let Ok(text) = obj.cast::<PyString>() {
        Ok(Value::Text(text.to_str()?.to_owned()))
    } else if let Ok(bytes) = obj.cast::<PyBytes>() {
        Ok(Value::Blob(bytes.as_bytes().to_vec()))
    } else {
        Err(to_py(CoreError::InvalidArgument(format!(
            "a SQLite value must be None, int, float, str or bytes, not {}",
            obj.get_type().name()?
        ))))
    }
}

fn to_values(row: &Bound<'_, PyAny>) -> PyResult<Vec<Value>> {
    row.try_iter()?.map(|v| to_value(&v?)).collect()
}

fn to_python<'py>(py: Python<'py>, value: Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Integer(n) => n.into_pyobject(py)?.into_any(),
        Value::Real(x) => x.into_pyobject(py)?.into_any(),
        Value::Text(s) => s.into_pyobject(py)?.into_any(),
        Value::Blob(b) => PyBytes::new(py, &b).into_any(),
    })
}

/// One connection to a SQLite rows file (the request log's).
#[pyclass(frozen)]
pub struct SqliteRows {
    store: Mutex<Option<RowStore>>,
}

impl SqliteRows {
    fn store(&self) -> MutexGuard<'_, Option<RowStore>> {
        // A panic mid-statement leaves the connection usable (the transaction rolled back).
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        work: impl Send + FnOnce(&mut RowStore) -> Result<T, CoreError>,
    ) -> PyResult<T> {
        enter_core(py, || match self.store().as_mut() {
            Some(store) => work(store),
            None => Err(CoreError::Storage(
                "sqlite: the connection is closed".into(),
            )),
        })
    }
}

#[pymethods]
impl SqliteRows {
    /// Opens (creating) `target`: a path (WAL; `synchronous_full`: FULL, else NORMAL) or,
    /// with `uri`, a `file:` URI.
    #[new]
    #[pyo3(signature = (target, uri=false, synchronous_full=false))]
    fn new(py: Python<'_>, target: &str, uri: bool, synchronous_full: bool) -> PyResult<Self> {
        let store = enter_core(py, || RowStore::open(target, uri, synchronous_full))?;
        Ok(SqliteRows {
            store: Mutex::new(Some(store)),
        })
    }

    /// Runs one statement; returns the number of rows it changed.
    #[pyo3(signature = (sql, params=None))]
    fn execute(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let values = params.map(to_values).transpose()?.unwrap_or_default();
        self.with(py, |store| store.execute(sql, &values))
    }

    /// Runs the statements in one transaction: all of them or none.
    fn execute_all(&self, py: Python<'_>, statements: Vec<String>) -> PyResult<()> {
        self.with(py, |store| store.execute_all(&statements))
    }

    /// The rows of a query, as tuples.
    #[pyo3(signature = (sql, params=None))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let values = params.map(to_values).transpose()?.unwrap_or_default();
        let rows = self.with(py, |store| store.query(sql, &values))?;
        rows.into_iter()
            .map(|row| {
                let items = row
                    .into_iter()
                    .map(|v| to_python(py, v))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, items)
            })
            .collect()
    }

    /// Inserts every row (a sequence of values) with `insert`, a one-row statement, in one
    /// transaction: all of them or none.
    fn insert_all(&self, py: Python<'_>, insert: &str, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        let rows = rows
            .try_iter()?
            .map(|row| to_values(&row?))
            .collect::<PyResult<Vec<_>>>()?;
        self.with(py, |store| store.insert_all(insert, &rows))
    }

    /// Closes the connection; later calls raise `StorageError`.
    fn close(&self, py: Python<'_>) {
        let store = self.store().take();
        py.detach(move || drop(store));
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SqliteRows>()?;
    Ok(())
}
