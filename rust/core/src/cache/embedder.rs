//! The built-in hashing embedder: no model, no network, tens of thousands of texts a second.
//!
//! A text becomes a bag of features — words (lower-cased, apostrophes dropped), word bigrams
//! and character 3- and 4-grams of each word with boundary marks — each hashed to a
//! dimension with a sign taken from the hash (feature hashing, Weinberger et al. 2009), so
//! collisions cancel out on average instead of piling up. Words that carry little meaning
//! (stop words) weigh less; numbers weigh more, because "5 apples" and "6 apples" are
//! different questions. The vector is L2-normalised, so a dot product is the cosine.

/// Weights of each kind of feature; chosen on the cache's paraphrase set.
const WORD: f32 = 1.0;
const STOP_WORD: f32 = 0.35;
const NUMBER: f32 = 2.0;
const BIGRAM: f32 = 0.6;
const CHAR_GRAM: f32 = 0.3;

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "does", "did", "i",
    "me", "my", "you", "your", "we", "our", "it", "its", "of", "to", "in", "on", "for", "at", "by",
    "with", "and", "or", "that", "this", "these", "those", "there", "what", "how", "which", "can",
    "could", "would", "should", "will", "please", "tell", "about", "as", "from", "into", "so",
    "if", "then", "than", "some", "any", "just", "like", "get", "give", "know", "want",
];

#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimensions: usize,
}

impl HashingEmbedder {
    pub fn new(dimensions: usize) -> crate::CoreResult<Self> {
        if dimensions == 0 || dimensions > 1 << 20 {
            return Err(crate::CoreError::InvalidArgument(format!(
                "dimensions must be between 1 and 1048576, got {dimensions}"
            )));
        }
        Ok(Self { dimensions })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Writes the embedding of `text` into `out` (length = dimensions). An empty text (no
    /// letters or digits) gives the zero vector, which matches nothing.
    pub fn embed_into(&self, text: &str, out: &mut [f32]) {
        out.fill(0.0);
        let mut word = String::with_capacity(32);
        let mut chars: Vec<char> = Vec::with_capacity(34);
        let mut previous: Option<u64> = None;
        let mut rest = text.chars().peekable();
        loop {
            word.clear();
            // Next word: a run of letters/digits; apostrophes inside a word are dropped
            // ("don't" → "dont"); a decimal point between digits stays ("2.5").
            while let Some(&c) = rest.peek() {
                if c.is_alphanumeric() {
                    for l in c.to_lowercase() {
                        word.push(l);
                    }
                    rest.next();
                } else if (c == '\'' || c == '’') && !word.is_empty() {
                    rest.next();
                } else if c == '.' && word.ends_with(|d: char| d.is_ascii_digit()) {
                    rest.next();
                    if rest.peek().is_some_and(|d| d.is_ascii_digit()) {
                        word.push('.');
                    } else {
                        break;
                    }
                } else if word.is_empty() {
                    rest.next();
                } else {
                    break;
                }
            }
            if word.is_empty() {
                if rest.peek().is_none() {
                    break;
                }
                continue;
            }
            let is_number = word.starts_with(|c: char| c.is_ascii_digit());
            let weight = if is_number {
                NUMBER
            } else if STOP_WORDS.contains(&word.as_str()) {
                STOP_WORD
            } else {
                WORD
            };
            let h = hash_bytes(word.as_bytes(), SEED_WORD);
            self.add(out, h, weight);
            if let Some(p) = previous {
                self.add(out, mix(p ^ h.rotate_left(17) ^ SEED_BIGRAM), BIGRAM);
            }
            previous = Some(h);
            if !is_number {
                chars.clear();
                chars.push('<');
                chars.extend(word.chars());
                chars.push('>');
                for n in [3usize, 4] {
                    if chars.len() < n {
                        continue;
                    }
                    for window in chars.windows(n) {
                        let mut g = SEED_CHAR ^ n as u64;
                        for c in window {
                            g = mix(g ^ u64::from(*c));
                        }
                        self.add(out, g, CHAR_GRAM * weight);
                    }
                }
            }
        }
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            let inv = 1.0 / norm;
            out.iter_mut().for_each(|x| *x *= inv);
        }
    }

    /// Embeds each text into one row of a row-major `(texts.len(), dimensions)` buffer.
    pub fn embed_batch<S: AsRef<str>>(&self, texts: &[S]) -> Vec<f32> {
        let mut out = vec![0f32; texts.len() * self.dimensions];
        for (text, row) in texts.iter().zip(out.chunks_exact_mut(self.dimensions)) {
            self.embed_into(text.as_ref(), row);
        }
        out
    }

    #[inline]
    fn add(&self, out: &mut [f32], h: u64, weight: f32) {
        // Lemire's multiply-shift maps the hash to [0, dimensions) without a division.
        let index = ((u128::from(h >> 1) * self.dimensions as u128) >> 63) as usize;
        out[index] += if h & 1 == 0 { weight } else { -weight };
    }
}

const SEED_WORD: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_BIGRAM: u64 = 0xc2b2_ae3d_27d4_eb4f;
const SEED_CHAR: u64 = 0x1656_67b1_9e37_79f9;

/// A 64-bit finaliser (splitmix64): cheap, and every input bit reaches every output bit.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline]
fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = mix(h ^ u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h ^ u64::from_le_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::simd::dot_f32;

    fn embed(e: &HashingEmbedder, t: &str) -> Vec<f32> {
        let mut v = vec![0.0; e.dimensions()];
        e.embed_into(t, &mut v);
        v
    }

    #[test]
    fn rows_are_unit_length_and_deterministic() {
        let e = HashingEmbedder::new(384).unwrap();
        let a = embed(&e, "How do I reverse a list in Python?");
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, embed(&e, "How do I reverse a list in Python?"));
        assert_eq!(a, embed(&e, "how do i REVERSE a list in python"));
        assert!(embed(&e, "  ?! ").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn similar_texts_score_higher_than_unrelated_ones() {
        let e = HashingEmbedder::new(384).unwrap();
        let q = embed(&e, "How do I reverse a list in Python?");
        let para = embed(&e, "how can I reverse a Python list");
        let other = embed(&e, "What is the capital of France?");
        assert!(dot_f32(&q, &para) > 0.6, "{}", dot_f32(&q, &para));
        assert!(dot_f32(&q, &other) < 0.3, "{}", dot_f32(&q, &other));
    }

    #[test]
    fn batch_equals_single() {
        let e = HashingEmbedder::new(64).unwrap();
        let texts = ["one", "two words", "", "don't 2.5 stop."];
        let batch = e.embed_batch(&texts);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(&batch[i * 64..(i + 1) * 64], embed(&e, t).as_slice());
        }
        assert_eq!(embed(&e, "dont"), embed(&e, "don't"));
        assert!(HashingEmbedder::new(0).is_err());
    }
}
