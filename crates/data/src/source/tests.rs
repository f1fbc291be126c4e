//! Sources: the shared datasets and small files in every format.

use super::*;
use std::io::Write;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

fn spec(source: PathBuf, text: &str, label: &str) -> DatasetSpec {
    DatasetSpec {
        source,
        test_source: None,
        text_column: text.into(),
        label_column: label.into(),
        split_column: "split".into(),
        train_split: "train".into(),
        test_split: "test".into(),
    }
}

#[test]
fn news20_parquet_splits_and_names() {
    let ds = load_dataset(&spec(shared("datasets/20newsgroups_bydate.parquet"), "text_clean", "label")).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (11_314, 7_532));
    assert_eq!(ds.labels.num_labels, 20);
    assert_eq!(ds.labels.names[0], "alt.atheism");
    assert_eq!(ds.labels.names[19], "talk.religion.misc");
    // 515 rows of text_clean are empty (shared/README.md).
    assert_eq!(ds.train.empty_texts() + ds.test.empty_texts(), 515);
    // Row ids are positions in the file: train and test together cover 0..18,846 once.
    let mut ids: Vec<u64> = ds.train.row_ids.iter().chain(&ds.test.row_ids).copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..18_846).collect::<Vec<u64>>());
}

#[test]
fn news_category_v3_jsonl_gz() {
    let mut s = spec(shared("datasets/news_category_v3_first9999.jsonl.gz"), "headline+short_description", "category");
    s.test_source = Some(s.source.clone());
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.train.len(), 9_999);
    assert_eq!(ds.labels.num_labels, 29);
    let mut sorted = ds.labels.names.clone();
    sorted.sort();
    assert_eq!(sorted, ds.labels.names, "string labels map in sorted order");
    // The first line of the v3 file: headline + ". " + short description.
    assert!(ds.train.texts[0].starts_with("Over 4 Million Americans Roll Up Sleeves For Omicron-Targeted COVID Boosters. "), "{}", ds.train.texts[0]);
    assert_eq!(ds.labels.names[ds.train.labels[0] as usize], "U.S. NEWS");
}

#[test]
fn csv_and_plain_jsonl_with_string_labels() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "text,label,split\nhello world,pos,train\n,neg,train\nbad,neg,test\nmeh,pos,validation\n").unwrap();
    let ds = load_dataset(&spec(csv, "text", "label")).unwrap();
    assert_eq!(ds.labels.names, vec!["neg".to_string(), "pos".into()]);
    assert_eq!(ds.train.labels, vec![1, 0]);
    assert_eq!(ds.train.texts, vec!["hello world".to_string(), String::new()]);
    assert_eq!(ds.train.empty_texts(), 1);
    assert_eq!((ds.test.labels.clone(), ds.test.row_ids.clone()), (vec![0], vec![2]));

    let jl = dir.path().join("d.jsonl");
    let mut f = std::fs::File::create(&jl).unwrap();
    writeln!(f, r#"{{"t": "a", "y": 2, "split": "train"}}"#).unwrap();
    writeln!(f).unwrap();
    writeln!(f, r#"{{"t": "b", "y": 0, "split": "test"}}"#).unwrap();
    drop(f);
    let ds = load_dataset(&spec(jl, "t", "y")).unwrap();
    assert_eq!(ds.labels.names, vec!["0".to_string(), "1".into(), "2".into()]);
    assert_eq!((ds.train.labels.clone(), ds.test.labels.clone()), (vec![2], vec![0]));
}

#[test]
fn errors_name_the_column_and_key() {
    let err = load_dataset(&spec(shared("datasets/20newsgroups_bydate.parquet"), "txt", "label")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no column `txt` (data.text_column)") && msg.contains("text_clean"), "{msg}");
    let mut s = spec(shared("datasets/20newsgroups_bydate.parquet"), "text_clean", "label");
    s.train_split = "training".into();
    let msg = load_dataset(&s).unwrap_err().to_string();
    assert!(msg.contains("data.train_split `training` matches no row"), "{msg}");
    let msg = load_dataset(&spec("x.xlsx".into(), "t", "l")).unwrap_err().to_string();
    assert!(msg.contains("unsupported data file"), "{msg}");
}
