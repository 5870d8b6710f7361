//! BERT's uncased tokenizer, as Hugging Face `tokenizers` runs it for all-MiniLM-L6-v2:
//! the `BertNormalizer` (clean text, pad CJK ideographs, strip accents, lowercase), the
//! `BertPreTokenizer` (split on whitespace, isolate punctuation) and greedy longest-match
//! `WordPiece` with the `##` continuation prefix.
//!
//! It is written against the exact rules of `tokenizers` (the same Unicode categories), so
//! the ids match the reference token for token; the parity test in `tests/` checks it.

use std::collections::HashMap;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use crate::error::{CoreError, CoreResult};

/// Words longer than this many characters become `[UNK]` (the tokenizer's setting).
const MAX_CHARS_PER_WORD: usize = 100;

/// A WordPiece vocabulary with BERT's uncased normalisation.
#[derive(Debug, Clone)]
pub struct WordPiece {
    /// Whole-word pieces (no prefix).
    starts: HashMap<String, u32>,
    /// Continuation pieces, stored without their `##`.
    continuations: HashMap<String, u32>,
    vocab_size: usize,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

impl WordPiece {
    /// Reads a `vocab.txt` (one token per line; the line number is the id).
    pub fn from_vocab_txt(text: &str) -> CoreResult<Self> {
        let mut starts = HashMap::new();
        let mut continuations = HashMap::new();
        let mut count = 0usize;
        for (id, line) in text.lines().enumerate() {
            let token = line.trim_end_matches('\r');
            let id = u32::try_from(id)
                .map_err(|_| CoreError::InvalidArgument("vocabulary too large".into()))?;
            match token.strip_prefix("##") {
                Some(rest) if !rest.is_empty() => continuations.insert(rest.to_owned(), id),
                _ => starts.insert(token.to_owned(), id),
            };
            count += 1;
        }
        let special = |name: &str| {
            starts
                .get(name)
                .copied()
                .ok_or_else(|| CoreError::InvalidArgument(format!("vocabulary lacks {name}")))
        };
        Ok(WordPiece {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            pad: special("[PAD]")?,
            starts,
            continuations,
            vocab_size: count,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The ids of `text` wrapped in `[CLS]` … `[SEP]`, truncated to `max_len` ids in all.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let budget = max_len.saturating_sub(2);
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        ids.push(self.cls);
        let normalized = normalize(text);
        let mut piece = String::new();
        'words: for word in pre_tokenize(&normalized) {
            if ids.len() > budget {
                break;
            }
            let start_len = ids.len();
            if !self.word_pieces(word, &mut ids, &mut piece) {
                ids.truncate(start_len);
                ids.push(self.unk);
            }
            if ids.len() - 1 > budget {
                ids.truncate(budget + 1);
                break 'words;
            }
        }
        ids.push(self.sep);
        ids
    }

    /// Number of ids `encode` would produce without a length limit (for usage counts).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.encode(text, usize::MAX).len()
    }

    /// Greedy longest-match-first; false when some part of the word matches nothing (the
    /// whole word then becomes `[UNK]`, as in `tokenizers`).
    fn word_pieces(&self, word: &str, out: &mut Vec<u32>, piece: &mut String) -> bool {
        if word.chars().count() > MAX_CHARS_PER_WORD {
            return false;
        }
        let bounds: Vec<usize> = word
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(word.len()))
            .collect();
        let mut start = 0usize; // index into `bounds`
        let last = bounds.len() - 1;
        while start < last {
            let table = if start == 0 {
                &self.starts
            } else {
                &self.continuations
            };
            let mut end = last;
            let mut found = None;
            while end > start {
                piece.clear();
                piece.push_str(&word[bounds[start]..bounds[end]]);
                if let Some(&id) = table.get(piece.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => out.push(id),
                None => return false,
            }
            start = end;
        }
        true
    }
}

/// `BertNormalizer { clean_text, handle_chinese_chars, strip_accents: None (= lowercase),
/// lowercase: true }`, step for step.
pub fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len() + 8);
    let mut ascii_only = true;
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
            ascii_only = false;
        } else {
            ascii_only &= c.is_ascii();
            cleaned.push(c);
        }
    }
    if ascii_only {
        cleaned.make_ascii_lowercase();
        return cleaned;
    }
    let mut out = String::with_capacity(cleaned.len());
    for c in cleaned.nfd().filter(|c| !c.is_mark_nonspacing()) {
        out.extend(c.to_lowercase());
    }
    out
}

/// `BertPreTokenizer`: words split on whitespace, each punctuation character its own word.
pub fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
        } else if is_bert_punctuation(c) {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            words.push(&text[i..i + c.len_utf8()]);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words.into_iter()
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> WordPiece {
        let tokens = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "!", "un", "##aff", "##able",
            "cafe", ",", "中", "国",
        ];
        WordPiece::from_vocab_txt(&tokens.join("\n")).unwrap()
    }

    #[test]
    fn normalizes_like_bert_uncased() {
        assert_eq!(normalize("Héllo\tWORLD\u{0}"), "hello world");
        assert_eq!(normalize("中国"), " 中  国 ");
        assert_eq!(normalize("Café"), "cafe");
    }

    #[test]
    fn splits_punctuation_and_whitespace() {
        let words: Vec<&str> = pre_tokenize("hello,  world!").collect();
        assert_eq!(words, vec!["hello", ",", "world", "!"]);
    }

    #[test]
    fn greedy_longest_match_with_continuations() {
        let wp = vocab();
        assert_eq!(wp.encode("Unaffable hello", 512), vec![2, 7, 8, 9, 4, 3]);
        // A word with an unmatched tail is one [UNK] as a whole.
        assert_eq!(wp.encode("unxyz world", 512), vec![2, 1, 5, 3]);
        assert_eq!(wp.encode("Café, 中国!", 512), vec![2, 10, 11, 12, 13, 6, 3]);
    }

    #[test]
    fn truncates_to_max_len_including_specials() {
        let wp = vocab();
        let ids = wp.encode("hello world hello world hello", 4);
        assert_eq!(ids, vec![2, 4, 5, 3]);
        // A multi-piece word cut in the middle keeps its first pieces (tokenizers truncates ids).
        assert_eq!(wp.encode("unaffable", 4), vec![2, 7, 8, 3]);
        assert_eq!(wp.encode("", 256), vec![2, 3]);
        assert_eq!(wp.count_tokens("hello world hello"), 5);
    }
}
