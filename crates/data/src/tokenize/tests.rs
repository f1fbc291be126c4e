//! Tokenization against the real MiniLM tokenizer and the 20 Newsgroups texts.

use super::*;
use std::path::PathBuf;

fn shared(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

fn minilm() -> Tokenizer {
    load_tokenizer(&shared("models/paraphrase-MiniLM-L3-v2/tokenizer.json"), 128).unwrap()
}

#[test]
fn padding_off_truncation_on_and_empty_text_rule() {
    let tok = minilm();
    assert!(tok.get_padding().is_none(), "the shipped file pads to 128: padding must be switched off");
    let texts = vec!["hello world".to_string(), String::new(), "  ".into(), "word ".repeat(500)];
    let out = tokenize(&tok, &texts, &ProgressBar::hidden()).unwrap();
    // [CLS] hello world [SEP] with the bert-base-uncased vocabulary.
    assert_eq!(out.ids[0], vec![101, 7592, 2088, 102]);
    // Empty texts are kept as [CLS] [SEP].
    assert_eq!(out.ids[1], vec![101, 102]);
    assert_eq!(out.ids[2], vec![101, 102]);
    assert_eq!(out.ids[3].len(), 128);
    assert_eq!((out.ids[3][0], out.ids[3][127]), (101, 102));
    assert_eq!((out.empty_texts, out.truncated), (2, 1));
}

#[test]
fn prefix_fast_path_equals_plain_encoding_on_news20() {
    use crate::source::{load_dataset, DatasetSpec};
    let ds = load_dataset(&DatasetSpec {
        source: shared("datasets/20newsgroups_bydate.parquet"),
        source_shards: Vec::new(),
        test_source: None,
        test_source_shards: Vec::new(),
        text_column: "text_clean".into(),
        label_column: "label".into(),
        split_column: "split".into(),
        train_split: "train".into(),
        test_split: "test".into(),
        test_fraction: 0.0,
        split_seed: 0,
        id_column: None,
    })
    .unwrap();
    let tok = minilm();
    assert!(prefix_is_exact(&tok));
    // Every 7th train text: ~1,600 texts of every length, long ones included.
    let texts: Vec<String> = ds.train.texts.iter().step_by(7).cloned().collect();
    let fast = tokenize(&tok, &texts, &ProgressBar::hidden()).unwrap();
    let plain = tok.encode_batch_fast(texts.iter().map(String::as_str).collect::<Vec<_>>(), true).unwrap();
    let plain_ids: Vec<Vec<u32>> = plain.iter().map(|e| e.get_ids().to_vec()).collect();
    assert_eq!(fast.ids, plain_ids);
    let plain_truncated = plain.iter().filter(|e| !e.get_overflowing().is_empty()).count();
    assert_eq!(fast.truncated, plain_truncated);
    assert!(fast.truncated > 500, "most 20NG texts exceed 128 tokens ({})", fast.truncated);
}

#[test]
fn whitespace_prefix_cuts_at_whitespace_only() {
    assert_eq!(whitespace_prefix("short", 10), None);
    assert_eq!(whitespace_prefix("aaa bbb ccc", 6), Some("aaa"));
    assert_eq!(whitespace_prefix("aaaaaaaaaa b", 5), None);
    // Multi-byte characters: the cut stays on a char boundary.
    assert_eq!(whitespace_prefix("é é é é", 4), Some("é"));
}
