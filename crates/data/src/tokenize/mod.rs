//! Tokenization with the `tokenizers` crate from a model's `tokenizer.json`.
//!
//! The shipped files of our models switch on fixed padding to 128; here truncation is set to
//! `max_len` (special tokens included, longest-first, right side) and padding is switched off:
//! batches are padded later, to their longest row.
//!
//! Speed: for BERT-style tokenizers (BertNormalizer or none, BertPreTokenizer, WordPiece) every step
//! before truncation is local to whitespace-separated words, so the first tokens of a text are the
//! tokens of a prefix cut at whitespace. A long text is therefore first encoded from a prefix of
//! `PREFIX_BYTES_PER_TOKEN * max_len` bytes cut at whitespace; when that already fills `max_len`
//! tokens the result equals the full text's (checked by a test against plain encoding), otherwise
//! the full text is encoded. 20 Newsgroups tokenizes ~4x faster this way.
//!
//! Empty texts (empty or whitespace only) are kept and tokenized like any text, which gives just the
//! special tokens (`[CLS] [SEP]` for BERT); [`Tokenized::empty_texts`] counts them.

use crate::DataError;
use indicatif::ProgressBar;
use std::path::Path;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Texts encoded per call; the progress bar advances per chunk.
const CHUNK: usize = 1024;
/// Prefix length per wanted token (bytes) for the prefix fast path.
const PREFIX_BYTES_PER_TOKEN: usize = 6;

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

/// Whether the prefix fast path gives the same ids as encoding the whole text.
fn prefix_is_exact(tok: &Tokenizer) -> bool {
    let normalizer_ok = matches!(tok.get_normalizer(), None | Some(NormalizerWrapper::BertNormalizer(_)));
    let pre_ok = matches!(tok.get_pre_tokenizer(), Some(PreTokenizerWrapper::BertPreTokenizer(_)));
    let model_ok = matches!(tok.get_model(), ModelWrapper::WordPiece(_));
    normalizer_ok && pre_ok && model_ok
}

/// `text` cut at the last whitespace at or before `max_bytes` (None when short or uncuttable).
fn whitespace_prefix(text: &str, max_bytes: usize) -> Option<&str> {
    if text.len() <= max_bytes {
        return None;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text[..end].rfind(char::is_whitespace)?;
    Some(&text[..cut]).filter(|p| !p.trim().is_empty())
}

fn encode(tok: &Tokenizer, inputs: Vec<&str>) -> Result<Vec<tokenizers::Encoding>, DataError> {
    tok.encode_batch_fast(inputs, true)
        .map_err(|e| DataError::Tokenizer { path: "tokenizer.json".into(), message: e.to_string() })
}

/// Encodes `texts` (special tokens added) in parallel on rayon's global pool.
pub fn tokenize(tok: &Tokenizer, texts: &[String], progress: &ProgressBar) -> Result<Tokenized, DataError> {
    let max_len = tok.get_truncation().map(|t| t.max_length);
    let prefix_bytes = max_len.filter(|_| prefix_is_exact(tok)).map(|m| m.saturating_mul(PREFIX_BYTES_PER_TOKEN));
    let mut out = Tokenized { ids: Vec::with_capacity(texts.len()), ..Default::default() };
    progress.set_length(texts.len() as u64);
    for chunk in texts.chunks(CHUNK) {
        let prefixes: Vec<Option<&str>> =
            chunk.iter().map(|t| prefix_bytes.and_then(|b| whitespace_prefix(t, b))).collect();
        let inputs = chunk.iter().zip(&prefixes).map(|(t, p)| p.unwrap_or(t.as_str())).collect();
        let mut encodings = encode(tok, inputs)?;
        // A prefix that did not fill max_len tokens: encode the whole text instead.
        let redo: Vec<usize> = (0..chunk.len())
            .filter(|&i| prefixes[i].is_some() && Some(encodings[i].len()) != max_len)
            .collect();
        if !redo.is_empty() {
            let full = encode(tok, redo.iter().map(|&i| chunk[i].as_str()).collect())?;
            for (i, enc) in redo.iter().zip(full) {
                encodings[*i] = enc;
            }
        }
        for (i, enc) in encodings.into_iter().enumerate() {
            let cut_by_prefix = prefixes[i].is_some_and(|p| Some(enc.len()) == max_len && !chunk[i][p.len()..].trim().is_empty());
            out.truncated += usize::from(!enc.get_overflowing().is_empty() || cut_by_prefix);
            out.ids.push(enc.get_ids().to_vec());
        }
        progress.inc(chunk.len() as u64);
    }
    out.empty_texts = texts.iter().filter(|t| t.trim().is_empty()).count();
    progress.finish_and_clear();
    Ok(out)
}

#[cfg(test)]
mod tests;
