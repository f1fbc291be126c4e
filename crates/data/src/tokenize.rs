//! Tokenization with the `tokenizers` crate from a model's `tokenizer.json`.
//!
//! The shipped files of our models switch on fixed padding to 128; here truncation is set to
//! `max_len` (special tokens included, longest-first, right side) and padding is switched off:
//! batches are padded later, to their longest row.
//!
//! Empty texts (empty or whitespace only) are kept and tokenized like any text, which gives just the
//! special tokens (`[CLS] [SEP]` for BERT); [`Tokenized::empty_texts`] counts them.

use crate::DataError;
use indicatif::ProgressBar;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Texts encoded per call; the progress bar advances per chunk.
const CHUNK: usize = 1024;

/// Token ids of a list of texts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tokenized {
    /// Token ids per text (special tokens included, no padding).
    pub ids: Vec<Vec<u32>>,
    /// Texts that were empty or whitespace only.
    pub empty_texts: usize,
    /// Texts cut at `max_len`.
    pub truncated: usize,
}

/// Loads `tokenizer.json` with truncation at `max_len` and padding off.
pub fn load_tokenizer(path: &Path, max_len: usize) -> Result<Tokenizer, DataError> {
    let err = |message: String| DataError::Tokenizer { path: path.to_path_buf(), message };
    let mut tok = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| err(format!("truncation at {max_len}: {e}")))?;
    tok.with_padding(None);
    Ok(tok)
}

/// Encodes `texts` (special tokens added) in parallel on rayon's global pool.
pub fn tokenize(tok: &Tokenizer, texts: &[String], progress: &ProgressBar) -> Result<Tokenized, DataError> {
    let mut out = Tokenized { ids: Vec::with_capacity(texts.len()), ..Default::default() };
    progress.set_length(texts.len() as u64);
    for chunk in texts.chunks(CHUNK) {
        let inputs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encodings = tok.encode_batch_fast(inputs, true).map_err(|e| DataError::Tokenizer {
            path: "tokenizer.json".into(),
            message: e.to_string(),
        })?;
        for enc in encodings {
            out.truncated += usize::from(!enc.get_overflowing().is_empty());
            out.ids.push(enc.get_ids().to_vec());
        }
        progress.inc(chunk.len() as u64);
    }
    out.empty_texts = texts.iter().filter(|t| t.trim().is_empty()).count();
    progress.finish_and_clear();
    Ok(out)
}
