//! Shards as Parquet files.
//!
//! `client-00000.parquet`, …, `test.parquet`: columns `input_ids` List<UInt32> (token ids, special
//! tokens included, unpadded), `label` UInt32 (label id), `row_id` UInt64 (row position in the source
//! file). `stats.parquet`: one row per (client, label) — all pairs, zeros included — with columns
//! `client` UInt32, `label` UInt32, `label_name` Utf8, `count` UInt64.

use crate::DataError;
use arrow::array::{Array, AsArray, ListBuilder, RecordBatch, StringArray, UInt32Array, UInt32Builder, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

/// Rows of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shard {
    /// Token ids per row.
    pub input_ids: Vec<Vec<u32>>,
    /// Label id per row.
    pub labels: Vec<u32>,
    /// Source row position per row.
    pub row_ids: Vec<u64>,
}

impl Shard {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the shard has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The file name of client `i`'s shard: `client-00000.parquet`.
pub fn client_file_name(i: usize) -> String {
    format!("client-{i:05}.parquet")
}

fn shard_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("input_ids", DataType::List(Arc::new(Field::new_list_field(DataType::UInt32, false))), false),
        Field::new("label", DataType::UInt32, false),
        Field::new("row_id", DataType::UInt64, false),
    ]))
}

fn writer_props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .build()
}

/// Writes `batch` to `path` atomically and durably (`slora_fsio`): a full disk leaves the old file or
/// none, never half a shard.
fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), DataError> {
    // Errors name the file: a full disk mid-write must say where.
    let to_io = |e: parquet::errors::ParquetError| match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => *io,
            Err(other) => std::io::Error::other(format!("writing: {other}")),
        },
        other => std::io::Error::other(format!("writing: {other}")),
    };
    slora_fsio::write_atomic_with(path, |file| {
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_props())).map_err(to_io)?;
        writer.write(batch).map_err(to_io)?;
        writer.into_inner().map_err(to_io)
    })
    .map_err(|e| DataError::io(path, e))
}

/// Writes rows `input_ids[i]`, `labels[i]`, `row_ids[i]` to `path`.
pub fn write_rows(path: &Path, input_ids: &[&[u32]], labels: &[u32], row_ids: &[u64]) -> Result<(), DataError> {
    assert!(input_ids.len() == labels.len() && labels.len() == row_ids.len(), "shard columns differ in length");
    let total: usize = input_ids.iter().map(|r| r.len()).sum();
    let mut list = ListBuilder::with_capacity(UInt32Builder::with_capacity(total), input_ids.len())
        .with_field(Arc::new(Field::new_list_field(DataType::UInt32, false)));
    for row in input_ids {
        list.values().append_slice(row);
        list.append(true);
    }
    let batch = RecordBatch::try_new(
        shard_schema(),
        vec![
            Arc::new(list.finish()),
            Arc::new(UInt32Array::from(labels.to_vec())),
            Arc::new(UInt64Array::from(row_ids.to_vec())),
        ],
    )?;
    write_batch(path, &batch)
}

/// Writes a [`Shard`] to `path`.
pub fn write_shard(path: &Path, shard: &Shard) -> Result<(), DataError> {
    let ids: Vec<&[u32]> = shard.input_ids.iter().map(Vec::as_slice).collect();
    write_rows(path, &ids, &shard.labels, &shard.row_ids)
}

fn read_batches(path: &Path) -> Result<Vec<RecordBatch>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DataError::format(path, e))?
        .with_batch_size(16384)
        .build()
        .map_err(|e| DataError::format(path, e))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| DataError::format(path, e))
}

fn col<'b>(path: &Path, b: &'b RecordBatch, name: &str, want: &DataType) -> Result<&'b dyn Array, DataError> {
    let arr = b.column_by_name(name).ok_or_else(|| DataError::format(path, format!("no column `{name}`")))?;
    if arr.data_type() != want {
        return Err(DataError::format(path, format!("column `{name}` is {} (expected {want})", arr.data_type())));
    }
    Ok(arr.as_ref())
}

/// Reads a shard written by [`write_shard`].
pub fn read_shard(path: &Path) -> Result<Shard, DataError> {
    let mut shard = Shard::default();
    let list_type = shard_schema().field(0).data_type().clone();
    for b in read_batches(path)? {
        let ids = col(path, &b, "input_ids", &list_type)?.as_list::<i32>();
        let values = ids.values().as_primitive::<UInt32Type>().values();
        let offsets = ids.value_offsets();
        for w in offsets.windows(2) {
            shard.input_ids.push(values[w[0] as usize..w[1] as usize].to_vec());
        }
        shard.labels.extend(col(path, &b, "label", &DataType::UInt32)?.as_primitive::<UInt32Type>().values().iter());
        shard.row_ids.extend(col(path, &b, "row_id", &DataType::UInt64)?.as_primitive::<UInt64Type>().values().iter());
    }
    Ok(shard)
}

/// Writes `counts[client][label]` (every pair) with the label names.
pub fn write_stats(path: &Path, counts: &[Vec<u64>], label_names: &[String]) -> Result<(), DataError> {
    let (mut client, mut label, mut name, mut count) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, row) in counts.iter().enumerate() {
        for (l, &n) in row.iter().enumerate() {
            client.push(c as u32);
            label.push(l as u32);
            name.push(label_names.get(l).cloned().unwrap_or_else(|| l.to_string()));
            count.push(n);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("client", DataType::UInt32, false),
        Field::new("label", DataType::UInt32, false),
        Field::new("label_name", DataType::Utf8, false),
        Field::new("count", DataType::UInt64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from(client)),
            Arc::new(UInt32Array::from(label)),
            Arc::new(StringArray::from(name)),
            Arc::new(UInt64Array::from(count)),
        ],
    )?;
    write_batch(path, &batch)
}

/// Reads `stats.parquet`: `(counts[client][label], label names)`.
pub fn read_stats(path: &Path) -> Result<(Vec<Vec<u64>>, Vec<String>), DataError> {
    let mut rows = Vec::new();
    for b in read_batches(path)? {
        let c = col(path, &b, "client", &DataType::UInt32)?.as_primitive::<UInt32Type>().clone();
        let l = col(path, &b, "label", &DataType::UInt32)?.as_primitive::<UInt32Type>().clone();
        let name = col(path, &b, "label_name", &DataType::Utf8)?.as_string::<i32>().clone();
        let n = col(path, &b, "count", &DataType::UInt64)?.as_primitive::<UInt64Type>().clone();
        for i in 0..b.num_rows() {
            rows.push((c.value(i) as usize, l.value(i) as usize, name.value(i).to_string(), n.value(i)));
        }
    }
    let clients = rows.iter().map(|r| r.0 + 1).max().unwrap_or(0);
    let labels = rows.iter().map(|r| r.1 + 1).max().unwrap_or(0);
    let mut counts = vec![vec![0u64; labels]; clients];
    let mut names = vec![String::new(); labels];
    for (c, l, name, n) in rows {
        counts[c][l] = n;
        names[l] = name;
    }
    Ok((counts, names))
}

#[cfg(test)]
mod tests {

    /// A full disk while replacing a shard leaves the old shard whole and no temporary file.
    #[test]
    fn full_disk_leaves_the_old_shard() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(client_file_name(0));
        write_rows(&path, &[&[1, 2, 3]], &[0], &[7]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let rows: Vec<Vec<u32>> = (0..200).map(|i| vec![i; 30]).collect();
        let ids: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let err = slora_fsio::fault::with_budget(100, || write_rows(&path, &ids, &[1; 200], &[2; 200])).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    use super::*;

    #[test]
    fn shard_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(client_file_name(3));
        assert!(path.ends_with("client-00003.parquet"));
        let shard = Shard {
            input_ids: vec![vec![101, 102], vec![101, 7592, 2088, 102], vec![]],
            labels: vec![0, 19, 4],
            row_ids: vec![5, 0, u64::MAX],
        };
        write_shard(&path, &shard).unwrap();
        assert_eq!(read_shard(&path).unwrap(), shard);
    }

    #[test]
    fn stats_round_trip_keeps_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.parquet");
        let counts = vec![vec![3, 0, 1], vec![0, 0, 0]];
        let names = vec!["a".to_string(), "b".into(), "c".into()];
        write_stats(&path, &counts, &names).unwrap();
        assert_eq!(read_stats(&path).unwrap(), (counts, names));
    }
}
