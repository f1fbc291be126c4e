//! Reading a text-classification dataset into train and test splits.
//!
//! Formats by file name: `.parquet`; `.jsonl` / `.json` / `.jsonl.gz` (one JSON object per line, e.g.
//! News Category v3: `text_column = "headline+short_description"`, `label_column = "category"`);
//! `.csv` / `.csv.gz` (header row, types inferred by arrow-csv).
//!
//! - Text: `a+b` joins the non-empty values of columns `a` and `b` with ". "; a null or missing text is
//!   the empty string (kept; see [`crate::tokenize`] for how it is tokenized).
//! - Labels: integer columns are ids (>= 0; `num_labels` = largest id + 1, names from a
//!   `<label_column>_name` column when present, else the id); string columns are mapped to ids in
//!   sorted order of the names found in train and test together (stable across runs and row orders).
//!   Any other type (float — even `1.0` —, boolean, list, …) is an error naming the column and type;
//!   so is a null label. Text columns must be strings (null = empty text); CSV text columns are
//!   always read as text. A file without rows is an error.
//! - Train/test: a second source (`test_source`: all its rows are test), else the `split_column`
//!   values `train_split` / `test_split` (rows with other values, e.g. `validation`, are dropped).
//! - Shards: a source may come in several files (a hub dataset's `train-00000-of-00002.parquet`, …),
//!   read one after the other as one table.
//! - Row ids: the row's 0-based position in its file (in the shards read one after the other).
//! - Writer ids (`id_column`, for the natural-id partitioner): any scalar column read as text (numbers
//!   in their decimal form); null and missing values are the empty string, which is one id like any
//!   other (flwr-datasets' `NaturalIdPartitioner` groups on the raw value too).

mod columnar;
mod jsonl;

use crate::{DataError, LabelSet};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What to read and how to tell train from test.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// The main file (local; resolve hub ids first with `slora_hub`).
    pub source: PathBuf,
    /// Further shards of `source` (same columns), read after it in this order; row ids count on
    /// across shards.
    pub source_shards: Vec<PathBuf>,
    /// A file holding the test rows, or `None` to use `split_column`.
    pub test_source: Option<PathBuf>,
    /// Further shards of `test_source`, read after it in this order.
    pub test_source_shards: Vec<PathBuf>,
    /// Text column, or columns joined by `+`.
    pub text_column: String,
    /// Label column.
    pub label_column: String,
    /// Split column (used without `test_source`).
    pub split_column: String,
    /// Split value meaning train.
    pub train_split: String,
    /// Split value meaning test.
    pub test_split: String,
    /// When in (0, 1) and there is no `test_source`: the split column is not read; a seeded split,
    /// stratified by label, holds out this fraction of the file's rows as the test set.
    pub test_fraction: f64,
    /// Seed of that split.
    pub split_seed: u64,
    /// A column naming who wrote each row (read into [`Split::ids`]), or `None`.
    pub id_column: Option<String>,
}

/// Rows of one split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// Texts.
    pub texts: Vec<String>,
    /// Label ids.
    pub labels: Vec<u32>,
    /// 0-based row position in the source file.
    pub row_ids: Vec<u64>,
    /// The `id_column` value of each row (empty when no id column was read).
    pub ids: Vec<String>,
}

impl Split {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        Split {
            texts: indices.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            row_ids: indices.iter().map(|&i| self.row_ids[i]).collect(),
            ids: if self.ids.is_empty() { Vec::new() } else { indices.iter().map(|&i| self.ids[i].clone()).collect() },
        }
    }

    /// How many texts are empty (after trimming).
    pub fn empty_texts(&self) -> usize {
        self.texts.iter().filter(|t| t.trim().is_empty()).count()
    }
}

/// A loaded dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Train rows.
    pub train: Split,
    /// Test rows.
    pub test: Split,
    /// Label names by id.
    pub labels: LabelSet,
}

/// Labels as read, before mapping to ids.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawLabels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

/// Columns of one file.
#[derive(Debug, Clone)]
pub(crate) struct RawRows {
    pub texts: Vec<String>,
    pub labels: RawLabels,
    pub splits: Option<Vec<String>>,
    /// `<label_column>_name`, when present.
    pub label_names: Option<Vec<String>>,
    /// The id column, when asked for.
    pub ids: Option<Vec<String>>,
}

/// Which columns to read from a file.
#[derive(Debug, Clone)]
pub(crate) struct Columns<'a> {
    pub text_parts: Vec<&'a str>,
    pub label: &'a str,
    pub split: Option<&'a str>,
    pub label_name: String,
    pub id: Option<&'a str>,
}

/// Joins text parts the way `a+b` asks for.
pub(crate) fn join_parts<'s>(parts: impl Iterator<Item = &'s str>) -> String {
    let kept: Vec<&str> = parts.map(str::trim).filter(|p| !p.is_empty()).collect();
    kept.join(". ")
}

fn read_file(path: &Path, cols: &Columns) -> Result<RawRows, DataError> {
    let rows = read_format(path, cols)?;
    if rows.texts.is_empty() {
        return Err(DataError::format(path, "the file holds no rows"));
    }
    Ok(rows)
}

/// `first` and its `shards`, read one after the other into one table.
fn read_sharded(first: &Path, shards: &[PathBuf], cols: &Columns) -> Result<RawRows, DataError> {
    let mut rows = read_file(first, cols)?;
    for shard in shards {
        let more = read_file(shard, cols)?;
        match (&mut rows.labels, more.labels) {
            (RawLabels::Int(a), RawLabels::Int(b)) => a.extend(b),
            (RawLabels::Str(a), RawLabels::Str(b)) => a.extend(b),
            _ => {
                return Err(DataError::format(
                    shard,
                    format!("label column `{}` is numeric in one shard and text in another", cols.label),
                ))
            }
        }
        rows.texts.extend(more.texts);
        let extend = |a: &mut Option<Vec<String>>, b: Option<Vec<String>>| match (a.as_mut(), b) {
            (Some(a), Some(b)) => a.extend(b),
            _ => *a = None,
        };
        extend(&mut rows.splits, more.splits);
        extend(&mut rows.label_names, more.label_names);
        extend(&mut rows.ids, more.ids);
    }
    Ok(rows)
}

fn read_format(path: &Path, cols: &Columns) -> Result<RawRows, DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    if name.ends_with(".parquet") && !gz {
        columnar::read_parquet(path, cols)
    } else if name.ends_with(".jsonl") || name.ends_with(".json") || name.ends_with(".ndjson") {
        jsonl::read_jsonl(path, cols, gz)
    } else if name.ends_with(".csv") {
        columnar::read_csv(path, cols, gz)
    } else {
        Err(DataError::UnknownFormat { path: path.to_path_buf() })
    }
}

/// (train, test) row indices, both ascending: `fraction` of the rows, stratified by raw label
/// value (each label's share rounded by largest remainder), seeded.
fn fraction_split(labels: &RawLabels, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    // Labels as dense ids in first-seen order, only to stratify.
    let keys: Vec<String> = match labels {
        RawLabels::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        RawLabels::Str(v) => v.clone(),
    };
    let mut ids = std::collections::HashMap::new();
    let dense: Vec<u32> = keys.iter().map(|k| { let next = ids.len() as u32; *ids.entry(k.as_str()).or_insert(next) }).collect();
    let n = dense.len();
    let take = ((n as f64 * fraction).round() as usize).min(n.saturating_sub(1));
    let mut is_test = vec![false; n];
    if take > 0 {
        for i in crate::stratified_subsample(&dense, take, seed) {
            is_test[i] = true;
        }
    }
    // A label whose rows all went to test (a rare label's rounding) keeps its first row for training.
    let mut in_train = vec![false; ids.len()];
    for i in (0..n).filter(|&i| !is_test[i]) {
        in_train[dense[i] as usize] = true;
    }
    for i in 0..n {
        if !in_train[dense[i] as usize] {
            is_test[i] = false;
            in_train[dense[i] as usize] = true;
        }
    }
    let train = (0..n).filter(|&i| !is_test[i]).collect();
    let test = (0..n).filter(|&i| is_test[i]).collect();
    (train, test)
}

/// Reads the dataset `spec` describes.
pub fn load_dataset(spec: &DatasetSpec) -> Result<Dataset, DataError> {
    let text_parts: Vec<&str> = spec.text_column.split('+').map(str::trim).collect();
    let cols = |with_split: bool| Columns {
        text_parts: text_parts.clone(),
        label: &spec.label_column,
        split: with_split.then_some(spec.split_column.as_str()),
        label_name: format!("{}_name", spec.label_column),
        id: spec.id_column.as_deref(),
    };
    let (train_rows, train_idx, test_rows, test_idx);
    match &spec.test_source {
        Some(test_path) => {
            train_rows = read_sharded(&spec.source, &spec.source_shards, &cols(false))?;
            test_rows = read_sharded(test_path, &spec.test_source_shards, &cols(false))?;
            train_idx = (0..train_rows.texts.len()).collect::<Vec<_>>();
            test_idx = (0..test_rows.texts.len()).collect::<Vec<_>>();
        }
        None if spec.test_fraction > 0.0 => {
            let rows = read_sharded(&spec.source, &spec.source_shards, &cols(false))?;
            (train_idx, test_idx) = fraction_split(&rows.labels, spec.test_fraction, spec.split_seed);
            if test_idx.is_empty() {
                return Err(DataError::Split(format!(
                    "{}: data.test_fraction {} of {} rows holds out no row",
                    spec.source.display(),
                    spec.test_fraction,
                    rows.texts.len()
                )));
            }
            test_rows = rows.clone();
            train_rows = rows;
        }
        None => {
            let rows = read_sharded(&spec.source, &spec.source_shards, &cols(true))?;
            let splits = rows.splits.as_ref().expect("split column read");
            let pick = |value: &str| splits.iter().enumerate().filter(|(_, s)| *s == value).map(|(i, _)| i).collect::<Vec<_>>();
            train_idx = pick(&spec.train_split);
            test_idx = pick(&spec.test_split);
            let values: BTreeSet<&str> = splits.iter().map(String::as_str).collect();
            let values = values.into_iter().collect::<Vec<_>>().join(", ");
            for (idx, key, value) in [(&train_idx, "data.train_split", &spec.train_split), (&test_idx, "data.test_split", &spec.test_split)] {
                if idx.is_empty() {
                    return Err(DataError::Split(format!(
                        "{}: {key} `{value}` matches no row of column `{}` (values: {values})",
                        spec.source.display(),
                        spec.split_column
                    )));
                }
            }
            test_rows = rows.clone();
            train_rows = rows;
        }
    }
    if train_idx.is_empty() {
        return Err(DataError::Split(format!("{}: no train rows", spec.source.display())));
    }
    let (train_ids, test_ids, names) = map_labels(&train_rows, &train_idx, &test_rows, &test_idx, spec)?;
    let make = |rows: &RawRows, idx: &[usize], ids: Vec<u32>| Split {
        texts: idx.iter().map(|&i| rows.texts[i].clone()).collect(),
        labels: ids,
        row_ids: idx.iter().map(|&i| i as u64).collect(),
        ids: rows.ids.as_ref().map(|ids| idx.iter().map(|&i| ids[i].clone()).collect()).unwrap_or_default(),
    };
    Ok(Dataset {
        train: make(&train_rows, &train_idx, train_ids),
        test: make(&test_rows, &test_idx, test_ids),
        labels: LabelSet::new(names),
    })
}

type Mapped = (Vec<u32>, Vec<u32>, Vec<String>);

fn map_labels(
    train: &RawRows,
    train_idx: &[usize],
    test: &RawRows,
    test_idx: &[usize],
    spec: &DatasetSpec,
) -> Result<Mapped, DataError> {
    match (&train.labels, &test.labels) {
        (RawLabels::Int(a), RawLabels::Int(b)) => {
            let check = |vals: &[i64], idx: &[usize], path: &Path| -> Result<Vec<u32>, DataError> {
                idx.iter()
                    .map(|&i| {
                        u32::try_from(vals[i]).map_err(|_| DataError::BadValue {
                            path: path.to_path_buf(),
                            row: i,
                            column: spec.label_column.clone(),
                            message: format!("label ids must be 0 ..= 2^32-1 (got {})", vals[i]),
                        })
                    })
                    .collect()
            };
            let test_path = spec.test_source.as_deref().unwrap_or(&spec.source);
            let tr = check(a, train_idx, &spec.source)?;
            let te = check(b, test_idx, test_path)?;
            let num = tr.iter().chain(&te).max().map_or(0, |m| *m as usize + 1);
            // Names from `<label>_name` when every id has one consistent name, else the id itself.
            let mut names: BTreeMap<u32, String> = BTreeMap::new();
            let mut consistent = train.label_names.is_some() && test.label_names.is_some();
            for (rows, idx, ids) in [(train, train_idx, &tr), (test, test_idx, &te)] {
                if let Some(ln) = &rows.label_names {
                    for (&i, &id) in idx.iter().zip(ids.iter()) {
                        let prev = names.entry(id).or_insert_with(|| ln[i].clone());
                        consistent &= *prev == ln[i];
                    }
                }
            }
            let names = (0..num as u32)
                .map(|id| names.get(&id).filter(|_| consistent).cloned().unwrap_or_else(|| id.to_string()))
                .collect();
            Ok((tr, te, names))
        }
        (RawLabels::Str(a), RawLabels::Str(b)) => {
            let set: BTreeSet<&str> =
                train_idx.iter().map(|&i| a[i].as_str()).chain(test_idx.iter().map(|&i| b[i].as_str())).collect();
            let id: BTreeMap<&str, u32> = set.iter().enumerate().map(|(i, s)| (*s, i as u32)).collect();
            let tr = train_idx.iter().map(|&i| id[a[i].as_str()]).collect();
            let te = test_idx.iter().map(|&i| id[b[i].as_str()]).collect();
            Ok((tr, te, set.into_iter().map(String::from).collect()))
        }
        _ => Err(DataError::Split(format!(
            "data.label_column `{}` is numeric in one source and text in the other",
            spec.label_column
        ))),
    }
}

#[cfg(test)]
mod tests;
