//! Binding of `hybridfast_core::cache`: `HashingEmbedder`, `VectorIndex`, `ExactTable`.
//!
//! numpy arrays come in as read-only borrows (no copy when C-contiguous) and go out with
//! `into_pyarray` (the Rust buffer is handed over, no copy). Bulk work and every search run
//! with the interpreter released, so lookups from other threads proceed in parallel.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use hybridfast_core::cache::{self, IndexParams, StorageKind};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use parking_lot::{Mutex, RwLock};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{enter_core, to_py};

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The built-in hashing embedder: word, word-bigram and character 3/4-gram features,
/// signed feature hashing, L2-normalised rows. Deterministic, no model, no network.
#[pyclass(frozen, module = "hybridfast._core", name = "HashingEmbedder")]
pub struct PyHashingEmbedder {
    inner: cache::HashingEmbedder,
}

#[pymethods]
impl PyHashingEmbedder {
    #[new]
    #[pyo3(signature = (dimensions=384))]
    fn new(dimensions: usize) -> PyResult<Self> {
        let inner = cache::HashingEmbedder::new(dimensions).map_err(to_py)?;
        Ok(Self { inner })
    }

    #[getter]
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    #[getter]
    fn name(&self) -> &'static str {
        "hashing"
    }

    /// Embeds each text into one row of a float32 array of shape (len(texts), dimensions).
    fn embed<'py>(&self, py: Python<'py>, texts: Vec<String>) -> Bound<'py, PyArray2<f32>> {
        let n = texts.len();
        let dim = self.inner.dimensions();
        let data = py.detach(|| self.inner.embed_batch(&texts));
        Array2::from_shape_vec((n, dim), data)
            .expect("embed_batch returns n × dimensions values")
            .into_pyarray(py)
    }

    fn __repr__(&self) -> String {
        format!("HashingEmbedder(dimensions={})", self.inner.dimensions())
    }
}

/// A vector index of normalised embeddings, partitioned by scope: an exact SIMD scan for
/// small scopes and an HNSW graph once a scope holds `ann_threshold` entries. Scores are
/// cosine similarities. Thread-safe; searches release the GIL.
#[pyclass(frozen, module = "hybridfast._core", name = "VectorIndex")]
pub struct PyVectorIndex {
    inner: RwLock<cache::VectorIndex>,
}

fn rows<'a>(array: &'a PyReadonlyArray2<'_, f32>, owned: &'a mut Option<Vec<f32>>) -> &'a [f32] {
    match array.as_slice() {
        Ok(s) => s,
        Err(_) => owned.insert(array.as_array().iter().copied().collect()),
    }
}

#[pymethods]
impl PyVectorIndex {
    #[new]
    #[pyo3(signature = (dimensions, storage="f32", m=16, ef_construction=64, ef_search=96, ann_threshold=4096))]
    fn new(
        dimensions: usize,
        storage: &str,
        m: usize,
        ef_construction: usize,
        ef_search: usize,
        ann_threshold: usize,
    ) -> PyResult<Self> {
        let params = IndexParams {
            storage: StorageKind::parse(storage).map_err(to_py)?,
            m,
            ef_construction,
            ef_search,
            ann_threshold,
        };
        let inner = cache::VectorIndex::new(dimensions, params).map_err(to_py)?;
        Ok(Self {
            inner: RwLock::new(inner),
        })
    }

    #[getter]
    fn dimensions(&self) -> usize {
        self.inner.read().dimensions()
    }

    #[getter]
    fn storage(&self) -> &'static str {
        self.inner.read().params().storage.name()
    }

    fn __len__(&self) -> usize {
        self.inner.read().len()
    }

    fn __contains__(&self, id: i64) -> bool {
        self.inner.read().contains(id)
    }

    /// Adds (or replaces) rows of `vectors` (float32, shape (n, dimensions)) under `ids`
    /// (int64, shape (n,)) in `scope`.
    fn add(
        &self,
        py: Python<'_>,
        scope: u64,
        ids: PyReadonlyArray1<'_, i64>,
        vectors: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let ids_owned: Vec<i64>;
        let ids = match ids.as_slice() {
            Ok(s) => s,
            Err(_) => {
                ids_owned = ids.as_array().iter().copied().collect();
                &ids_owned
            }
        };
        if vectors.shape()[0] != ids.len() {
            return Err(to_py(hybridfast_core::CoreError::InvalidArgument(format!(
                "{} ids for {} vectors",
                ids.len(),
                vectors.shape()[0]
            ))));
        }
        let mut owned = None;
        let data = rows(&vectors, &mut owned);
        enter_core(py, || self.inner.write().add_batch(scope, ids, data))
    }

    /// The `k` nearest entries of `scope` for each row of `queries`: (ids int64 (n, k),
    /// scores float32 (n, k)), best first, padded with id -1 and score -inf.
    #[pyo3(signature = (scope, queries, k=10, ef=None, exact=false))]
    #[allow(clippy::type_complexity)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        scope: u64,
        queries: PyReadonlyArray2<'py, f32>,
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> PyResult<(Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>)> {
        let n = queries.shape()[0];
        let mut owned = None;
        let data = rows(&queries, &mut owned);
        let (ids, scores) = enter_core(py, || {
            self.inner.read().search_batch(scope, data, k, ef, exact)
        })?;
        let ids = Array2::from_shape_vec((n, k), ids).expect("n × k ids");
        let scores = Array2::from_shape_vec((n, k), scores).expect("n × k scores");
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// One query (float32, shape (dimensions,)): `[(id, cosine), ...]`, best first.
    #[pyo3(signature = (scope, query, k=10, ef=None, exact=false))]
    fn search_one(
        &self,
        py: Python<'_>,
        scope: u64,
        query: PyReadonlyArray1<'_, f32>,
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> PyResult<Vec<(i64, f32)>> {
        let owned: Vec<f32>;
        let q = match query.as_slice() {
            Ok(s) => s,
            Err(_) => {
                owned = query.as_array().iter().copied().collect();
                &owned
            }
        };
        enter_core(py, || self.inner.read().search(scope, q, k, ef, exact))
    }

    /// `(ids int64 (n,), vectors float32 (n, dimensions))` of the live entries of `scope`.
    #[allow(clippy::type_complexity)]
    fn export_scope<'py>(
        &self,
        py: Python<'py>,
        scope: u64,
    ) -> (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray2<f32>>) {
        let dim = self.inner.read().dimensions();
        let (ids, data) = py.detach(|| self.inner.read().export_scope(scope));
        let n = ids.len();
        let vectors = Array2::from_shape_vec((n, dim), data).expect("n × dimensions values");
        (ids.into_pyarray(py), vectors.into_pyarray(py))
    }

    /// Removes one entry; False when it was not there.
    fn remove(&self, id: i64) -> bool {
        self.inner.write().remove(id)
    }

    /// Removes every entry of `scope`; returns their ids.
    fn remove_scope(&self, scope: u64) -> Vec<i64> {
        self.inner.write().remove_scope(scope)
    }

    /// Removes everything; returns how many entries there were.
    fn clear(&self) -> usize {
        self.inner.write().clear()
    }

    /// `[(scope, live entries, has an HNSW graph), ...]`.
    fn scopes(&self) -> Vec<(u64, usize, bool)> {
        self.inner.read().scopes()
    }

    /// Writes a snapshot atomically (temporary file + rename).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        enter_core(py, || self.inner.read().save(&path))
    }

    /// Reads a snapshot written by `save`; raises StorageError when it is damaged.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = enter_core(py, || cache::VectorIndex::load(&path))?;
        Ok(Self {
            inner: RwLock::new(inner),
        })
    }

    fn __repr__(&self) -> String {
        let index = self.inner.read();
        format!(
            "VectorIndex(dimensions={}, storage={:?}, entries={})",
            index.dimensions(),
            index.params().storage.name(),
            index.len()
        )
    }
}

/// Byte keys → byte values with a TTL each and an LRU bound. Times are unix seconds;
/// `now` defaults to the clock (tests pass it to step through time).
#[pyclass(frozen, module = "hybridfast._core", name = "ExactTable")]
pub struct PyExactTable {
    inner: Mutex<cache::ExactTable>,
}

fn to_bytes<'py>(py: Python<'py>, keys: Vec<Box<[u8]>>) -> Vec<Bound<'py, PyBytes>> {
    keys.iter().map(|k| PyBytes::new(py, k)).collect()
}

#[pymethods]
impl PyExactTable {
    #[new]
    #[pyo3(signature = (max_entries=100_000))]
    fn new(max_entries: usize) -> PyResult<Self> {
        let inner = cache::ExactTable::new(max_entries).map_err(to_py)?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// The fresh value under `key` (marking it recently used), or None.
    #[pyo3(signature = (key, now=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        now: Option<f64>,
    ) -> Option<Bound<'py, PyBytes>> {
        let mut table = self.inner.lock();
        table
            .get(key, now.unwrap_or_else(unix_now))
            .map(|v| PyBytes::new(py, v))
    }

    /// `(value, expires_at, scope)` without touching recency, or None.
    #[pyo3(signature = (key, now=None))]
    fn peek<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        now: Option<f64>,
    ) -> Option<(Bound<'py, PyBytes>, f64, u64)> {
        let table = self.inner.lock();
        table
            .peek(key, now.unwrap_or_else(unix_now))
            .map(|(v, e, s)| (PyBytes::new(py, v), e, s))
    }

    /// Stores `value` for `ttl_s` seconds; returns the keys evicted to make room.
    #[pyo3(signature = (key, value, ttl_s, scope=0, now=None))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        value: &[u8],
        ttl_s: f64,
        scope: u64,
        now: Option<f64>,
    ) -> Vec<Bound<'py, PyBytes>> {
        let now = now.unwrap_or_else(unix_now);
        let evicted = self
            .inner
            .lock()
            .put(key, value.to_vec(), now + ttl_s, scope, now);
        to_bytes(py, evicted)
    }

    /// Stores `value` until the absolute time `expires_at` (for mirrors and reloads).
    #[pyo3(signature = (key, value, expires_at, scope=0, now=None))]
    fn put_until<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        value: &[u8],
        expires_at: f64,
        scope: u64,
        now: Option<f64>,
    ) -> Vec<Bound<'py, PyBytes>> {
        let now = now.unwrap_or_else(unix_now);
        let evicted = self
            .inner
            .lock()
            .put(key, value.to_vec(), expires_at, scope, now);
        to_bytes(py, evicted)
    }

    fn remove(&self, key: &[u8]) -> bool {
        self.inner.lock().remove(key)
    }

    /// Drops the entries stored with `scope`; returns their keys.
    fn remove_scope<'py>(&self, py: Python<'py>, scope: u64) -> Vec<Bound<'py, PyBytes>> {
        let removed = self.inner.lock().remove_scope(scope);
        to_bytes(py, removed)
    }

    /// Drops the entries expired at `now`; returns their keys.
    #[pyo3(signature = (now=None))]
    fn purge_expired<'py>(&self, py: Python<'py>, now: Option<f64>) -> Vec<Bound<'py, PyBytes>> {
        let removed = self
            .inner
            .lock()
            .purge_expired(now.unwrap_or_else(unix_now));
        to_bytes(py, removed)
    }

    fn clear(&self) -> usize {
        self.inner.lock().clear()
    }

    /// Keys from least to most recently used.
    fn keys<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        let keys = self.inner.lock().keys();
        to_bytes(py, keys)
    }

    fn __len__(&self) -> usize {
        self.inner.lock().len()
    }

    #[getter]
    fn max_entries(&self) -> usize {
        self.inner.lock().max_entries()
    }

    /// Entries pushed out by the LRU bound since start.
    #[getter]
    fn evictions(&self) -> u64 {
        self.inner.lock().counters().evictions
    }

    /// Entries dropped because their TTL ran out since start.
    #[getter]
    fn expirations(&self) -> u64 {
        self.inner.lock().counters().expirations
    }

    /// Writes the fresh entries atomically, oldest first.
    #[pyo3(signature = (path, now=None))]
    fn save(&self, py: Python<'_>, path: PathBuf, now: Option<f64>) -> PyResult<()> {
        let now = now.unwrap_or_else(unix_now);
        enter_core(py, || self.inner.lock().save(&path, now))
    }

    /// Loads the entries of a snapshot still fresh at `now`.
    #[staticmethod]
    #[pyo3(signature = (path, max_entries=100_000, now=None))]
    fn load(py: Python<'_>, path: PathBuf, max_entries: usize, now: Option<f64>) -> PyResult<Self> {
        let now = now.unwrap_or_else(unix_now);
        let inner = enter_core(py, || cache::ExactTable::load(&path, max_entries, now))?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHashingEmbedder>()?;
    m.add_class::<PyVectorIndex>()?;
    m.add_class::<PyExactTable>()?;
    Ok(())
}
