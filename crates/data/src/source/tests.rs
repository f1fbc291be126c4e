//! Sources: the shared datasets and small files in every format.

use super::*;
use std::io::Write;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel)
}

fn spec(source: PathBuf, text: &str, label: &str) -> DatasetSpec {
    DatasetSpec {
        source,
        source_shards: Vec::new(),
        test_source: None,
        test_source_shards: Vec::new(),
        text_column: text.into(),
        label_column: label.into(),
        split_column: "split".into(),
        train_split: "train".into(),
        test_split: "test".into(),
        test_fraction: 0.0,
        split_seed: 0,
        id_column: None,
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

/// A source in shards reads as the one file they were cut from: same rows, labels and row ids.
#[test]
fn shards_read_as_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..9)
        .map(|i| format!("{{\"text\": \"row {i}\", \"label\": \"{}\", \"split\": \"{}\"}}", ["b", "a", "c"][i % 3], if i % 4 == 3 { "test" } else { "train" }))
        .collect();
    let write = |name: &str, rows: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, rows.join("\n")).unwrap();
        path
    };
    let whole = load_dataset(&spec(write("all.jsonl", &lines), "text", "label")).unwrap();
    let mut sharded = spec(write("train-0.jsonl", &lines[..4]), "text", "label");
    sharded.source_shards = vec![write("train-1.jsonl", &lines[4..5]), write("train-2.jsonl", &lines[5..])];
    assert_eq!(load_dataset(&sharded).unwrap(), whole);
    assert_eq!(whole.train.row_ids, vec![0, 1, 2, 4, 5, 6, 8]);
    // Test shards likewise.
    let mut two = spec(write("tr.jsonl", &lines), "text", "label");
    two.test_source = Some(write("te-0.jsonl", &lines[..2]));
    two.test_source_shards = vec![write("te-1.jsonl", &lines[2..])];
    assert_eq!(load_dataset(&two).unwrap().test.texts.len(), 9);
    // A shard whose labels change type is named.
    let mut bad = spec(write("x-0.jsonl", &lines[..2]), "text", "label");
    bad.source_shards = vec![write("x-1.jsonl", &["{\"text\": \"t\", \"label\": 3, \"split\": \"train\"}".to_string()])];
    let err = load_dataset(&bad).unwrap_err().to_string();
    assert!(err.contains("x-1.jsonl") && err.contains("label"), "{err}");
}

#[test]
fn test_fraction_splits_a_file_without_a_split_column() {
    // News Category v3 has no split column: hold out 20 %, stratified by category, seeded.
    let mut s = spec(shared("datasets/news_category_v3_first9999.jsonl.gz"), "headline+short_description", "category");
    s.test_fraction = 0.2;
    s.split_seed = 7;
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.train.len() + ds.test.len(), 9_999);
    assert!((1_995..=2_005).contains(&ds.test.len()), "test rows {}", ds.test.len());
    let train: BTreeSet<u64> = ds.train.row_ids.iter().copied().collect();
    assert!(ds.test.row_ids.iter().all(|r| !train.contains(r)), "train and test overlap");
    // Stratified: every category with at least 10 rows sends 20 % (± one row) to test, and every
    // category keeps a training row.
    let count = |split: &Split, label: u32| split.labels.iter().filter(|&&l| l == label).count();
    for label in 0..ds.labels.num_labels as u32 {
        let (tr, te) = (count(&ds.train, label), count(&ds.test, label));
        assert!(tr > 0, "{} has no training row", ds.labels.names[label as usize]);
        if tr + te >= 10 {
            assert!((te as f64 - 0.2 * (tr + te) as f64).abs() <= 1.0, "{}: {te} of {}", ds.labels.names[label as usize], tr + te);
        }
    }
    // Deterministic for a seed, different for another.
    assert_eq!(load_dataset(&s).unwrap().test.row_ids, ds.test.row_ids);
    s.split_seed = 8;
    assert_ne!(load_dataset(&s).unwrap().test.row_ids, ds.test.row_ids);
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

#[test]
fn label_and_text_type_rules() {
    let dir = tempfile::tempdir().unwrap();
    // CSV text columns are text even when they look like numbers; integer labels are ids.
    let csv = dir.path().join("digits.csv");
    std::fs::write(&csv, "text,label,split\n123,1,train\n4.5,0,train\n,1,test\n").unwrap();
    let ds = load_dataset(&spec(csv, "text", "label")).unwrap();
    assert_eq!(ds.train.texts, vec!["123".to_string(), "4.5".into()]);
    assert_eq!(ds.train.labels, vec![1, 0]);
    // Float labels are not ids, even when integral.
    let csv = dir.path().join("floats.csv");
    std::fs::write(&csv, "text,label,split\na,1.0,train\nb,0.0,test\n").unwrap();
    let msg = load_dataset(&spec(csv, "text", "label")).unwrap_err().to_string();
    assert!(msg.contains("column `label` (data.label_column) has type Float64: labels must be integer ids or strings"), "{msg}");
    // JSON lines: a boolean label and a numeric text are named with their row.
    let jl = dir.path().join("bool.jsonl");
    std::fs::write(&jl, "{\"t\": \"a\", \"y\": true, \"split\": \"train\"}\n").unwrap();
    let msg = load_dataset(&spec(jl, "t", "y")).unwrap_err().to_string();
    assert!(msg.contains("row 0, column `y`: labels must be integer ids or strings (got true)"), "{msg}");
    let jl = dir.path().join("num.jsonl");
    std::fs::write(&jl, "{\"t\": 7, \"y\": 1, \"split\": \"train\"}\n").unwrap();
    let msg = load_dataset(&spec(jl, "t", "y")).unwrap_err().to_string();
    assert!(msg.contains("row 0, column `t`: text (data.text_column) must be a string (got 7)"), "{msg}");
    // A file without rows.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "text,label,split\n").unwrap();
    let msg = load_dataset(&spec(empty, "text", "label")).unwrap_err().to_string();
    assert!(msg.contains("empty.csv: the file holds no rows"), "{msg}");
}

#[test]
fn unarmed_fault_writer_is_a_plain_file() {
    // The budget is process-wide and read once per process: the armed path (ENOSPC mid-file) is tested
    // through the binary (tests/reliability/bad_input.rs, `disk_full_mid_write`).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    crate::fault::write_file(&path, b"abc").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"abc");
}

#[test]
fn id_column_reads_writers_as_text_in_every_format() {
    // News Category v3: `authors`, with 821 rows of empty authors (one id like any other).
    let mut s = spec(shared("datasets/news_category_v3_first9999.jsonl.gz"), "headline", "category");
    s.test_fraction = 0.2;
    s.id_column = Some("authors".into());
    let ds = load_dataset(&s).unwrap();
    assert_eq!(ds.train.ids.len(), ds.train.len());
    assert_eq!(ds.test.ids.len(), ds.test.len());
    let distinct: std::collections::BTreeSet<&String> = ds.train.ids.iter().chain(&ds.test.ids).collect();
    assert_eq!(distinct.len(), 1_651);
    assert_eq!(ds.train.ids.iter().chain(&ds.test.ids).filter(|a| a.is_empty()).count(), 821);
    let picked = ds.train.select(&[2, 0]);
    assert_eq!(picked.ids, vec![ds.train.ids[2].clone(), ds.train.ids[0].clone()]);
    // Without an id column nothing is read.
    s.id_column = None;
    assert!(load_dataset(&s).unwrap().train.ids.is_empty());
    // A missing id column names the key; numbers read as text in CSV and JSON lines.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("w.csv");
    std::fs::write(&csv, "text,label,user,split\nhi,0,17,train\nho,1,17,train\nha,0,4,test\n").unwrap();
    let mut c = spec(csv, "text", "label");
    c.id_column = Some("user".into());
    let ds = load_dataset(&c).unwrap();
    assert_eq!(ds.train.ids, ["17", "17"]);
    c.id_column = Some("writer".into());
    let err = load_dataset(&c).unwrap_err().to_string();
    assert!(err.contains("writer") && err.contains("partition.id_column"), "{err}");
    let jl = dir.path().join("w.jsonl");
    std::fs::write(&jl, "{\"text\":\"a\",\"label\":0,\"user\":3,\"split\":\"train\"}\n{\"text\":\"b\",\"label\":1,\"user\":null,\"split\":\"train\"}\n{\"text\":\"c\",\"label\":1,\"user\":[1],\"split\":\"test\"}\n").unwrap();
    let mut j = spec(jl, "text", "label");
    j.id_column = Some("user".into());
    let err = load_dataset(&j).unwrap_err().to_string();
    assert!(err.contains("user") && err.contains("row 2"), "{err}");
}
