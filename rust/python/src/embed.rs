//! Binding of `hybridfast_core::embed`: the local MiniLM model for Python.

use std::path::PathBuf;
use std::sync::Arc;

use hybridfast_core::embed;
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

use crate::errors::enter_core;

/// A BERT sentence-embedding model (all-MiniLM-L6-v2) run natively: WordPiece tokenizer,
/// encoder, mean pooling, L2 normalisation. Every bulk call releases the GIL and spreads the
/// batch over `threads` threads.
#[pyclass(frozen, module = "hybridfast._core")]
pub struct LocalEmbedder {
    inner: Arc<embed::LocalEmbedder>,
}

fn to_array(py: Python<'_>, rows: usize, dims: usize, data: Vec<f32>) -> Bound<'_, PyArray2<f32>> {
    Array2::from_shape_vec((rows, dims), data)
        .expect("the core returns rows × dims values")
        .into_pyarray(py)
}

#[pymethods]
impl LocalEmbedder {
    /// Loads `vocab.txt`, `config.json` and `model.safetensors` from `path`; `threads` 0 means
    /// one per core. Raises StorageError when a file is missing or malformed.
    #[new]
    #[pyo3(signature = (path, max_tokens=256, threads=0))]
    fn new(py: Python<'_>, path: PathBuf, max_tokens: usize, threads: usize) -> PyResult<Self> {
        let inner = enter_core(py, || {
            embed::LocalEmbedder::load(&path, max_tokens, threads)
        })?;
        Ok(LocalEmbedder {
            inner: Arc::new(inner),
        })
    }

    /// The vector size (384 for MiniLM).
    #[getter]
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    /// The longest input in tokens, `[CLS]`/`[SEP]` included; longer texts are truncated.
    #[getter]
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.tokenizer.vocab_size()
    }

    /// Embeds texts: a float32 array of shape `(len(texts), dimensions)`, rows L2-normalised.
    fn embed<'py>(&self, py: Python<'py>, texts: Vec<String>) -> Bound<'py, PyArray2<f32>> {
        self.embed_counted(py, texts).0
    }

    /// As `embed`, with the number of tokens the model read for each text (for usage).
    fn embed_counted<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> (Bound<'py, PyArray2<f32>>, Vec<usize>) {
        let inner = &self.inner;
        let rows = texts.len();
        let (data, tokens) = py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            inner.embed_counted(&refs)
        });
        (to_array(py, rows, inner.dimensions(), data), tokens)
    }

    /// Embeds pre-tokenized inputs (ids of this model's vocabulary; `[CLS]`/`[SEP]` are
    /// added). Returns the array and each input's token count; raises InvalidArgumentError
    /// for an id outside the vocabulary.
    fn embed_ids<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<Vec<u32>>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<usize>)> {
        let inner = &self.inner;
        let rows = inputs.len();
        let (data, tokens) = enter_core(py, || inner.embed_ids(&inputs))?;
        Ok((to_array(py, rows, inner.dimensions(), data), tokens))
    }

    /// The ids the model reads for each text (`[CLS]` … `[SEP]`, truncated to `max_tokens`).
    fn tokenize(&self, py: Python<'_>, texts: Vec<String>) -> Vec<Vec<u32>> {
        let inner = &self.inner;
        py.detach(|| texts.iter().map(|t| inner.tokenize(t)).collect())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LocalEmbedder>()?;
    Ok(())
}
