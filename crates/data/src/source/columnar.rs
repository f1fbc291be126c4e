//! Parquet and CSV through arrow: only the needed columns are read (Parquet projection), then cast
//! to Utf8 / Int64.

use super::{join_parts, Columns, RawLabels, RawRows};
use crate::DataError;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use std::fs::File;
use std::io::Read;
use std::path::Path;

pub(crate) fn read_parquet(path: &Path, cols: &Columns) -> Result<RawRows, DataError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::format(path, e))?;
    let schema = builder.schema().clone();
    let wanted = wanted_columns(path, &schema, cols)?;
    let roots: Vec<usize> = wanted.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).with_batch_size(8192).build().map_err(|e| DataError::format(path, e))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| DataError::format(path, e))?;
    from_batches(path, &batches, cols)
}

pub(crate) fn read_csv(path: &Path, cols: &Columns, gz: bool) -> Result<RawRows, DataError> {
    use arrow::csv::reader::Format;
    let open = || -> Result<Box<dyn Read>, DataError> {
        let f = File::open(path).map_err(|e| DataError::io(path, e))?;
        Ok(if gz { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) })
    };
    let format = Format::default().with_header(true);
    let (inferred, _) = format.infer_schema(open()?, None).map_err(|e| DataError::format(path, e))?;
    wanted_columns(path, &inferred, cols)?;
    // CSV has no declared types: text and split columns are text whatever they look like (inference
    // would make a column of digits Int64); the label column keeps its inferred type (integer = ids).
    let as_text =
        |name: &str| cols.text_parts.contains(&name) || cols.split == Some(name) || name == cols.label_name || cols.id == Some(name);
    let schema = Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| if as_text(f.name()) { f.as_ref().clone().with_data_type(DataType::Utf8) } else { f.as_ref().clone() })
            .collect::<Vec<_>>(),
    );
    let reader = arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema))
        .with_format(format)
        .with_batch_size(8192)
        .build(open()?)
        .map_err(|e| DataError::format(path, e))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| DataError::format(path, e))?;
    from_batches(path, &batches, cols)
}

/// The columns to read, checking the required ones exist.
fn wanted_columns(path: &Path, schema: &Schema, cols: &Columns) -> Result<Vec<String>, DataError> {
    let available = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    let missing = |column: &str, key: &'static str| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        key,
        available: available(),
    };
    let mut wanted = Vec::new();
    for part in &cols.text_parts {
        schema.index_of(part).map_err(|_| missing(part, "data.text_column"))?;
        wanted.push(part.to_string());
    }
    schema.index_of(cols.label).map_err(|_| missing(cols.label, "data.label_column"))?;
    wanted.push(cols.label.to_string());
    if let Some(split) = cols.split {
        schema.index_of(split).map_err(|_| missing(split, "data.split_column (or set data.test_source)"))?;
        wanted.push(split.to_string());
    }
    if let Some(id) = cols.id {
        schema.index_of(id).map_err(|_| missing(id, "partition.id_column"))?;
        wanted.push(id.to_string());
    }
    if schema.index_of(&cols.label_name).is_ok() {
        wanted.push(cols.label_name.clone());
    }
    Ok(wanted)
}

fn column<'b>(batch: &'b RecordBatch, name: &str) -> &'b ArrayRef {
    batch.column(batch.schema().index_of(name).expect("checked by wanted_columns"))
}

/// A column as strings (null = empty).
fn strings(path: &Path, batches: &[RecordBatch], name: &str) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for b in batches {
        let arr = arrow::compute::cast(column(b, name), &DataType::Utf8).map_err(|e| DataError::format(path, format!("column `{name}`: {e}")))?;
        let arr = arr.as_string::<i32>();
        out.extend((0..arr.len()).map(|i| if arr.is_null(i) { String::new() } else { arr.value(i).to_string() }));
    }
    Ok(out)
}

/// Whether arrow type `t` holds text.
fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// Label rule: integer columns are ids, text columns are names mapped to ids; anything else (floats,
/// booleans, lists, dates) is an error naming the column and its type. Floats are rejected even
/// when integral: `1.0` vs `1` cannot be told from a lossy export.
fn check_types(path: &Path, schema: &Schema, cols: &Columns) -> Result<(), DataError> {
    let type_of = |name: &str| schema.field_with_name(name).map(|f| f.data_type().clone()).ok();
    for part in &cols.text_parts {
        if let Some(t) = type_of(part).filter(|t| !is_text(t)) {
            return Err(DataError::format(path, format!("column `{part}` (data.text_column) has type {t}: expected text (a string column)")));
        }
    }
    if let Some(t) = type_of(cols.label).filter(|t| !t.is_integer() && !is_text(t) || *t == DataType::Null) {
        return Err(DataError::format(
            path,
            format!("column `{}` (data.label_column) has type {t}: labels must be integer ids or strings (mapped to ids in sorted order)", cols.label),
        ));
    }
    Ok(())
}

fn from_batches(path: &Path, batches: &[RecordBatch], cols: &Columns) -> Result<RawRows, DataError> {
    if let Some(b) = batches.first() {
        check_types(path, &b.schema(), cols)?;
    }
    let parts = cols.text_parts.iter().map(|p| strings(path, batches, p)).collect::<Result<Vec<_>, _>>()?;
    let n = parts.first().map_or(0, Vec::len);
    let texts = if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        (0..n).map(|i| join_parts(parts.iter().map(|p| p[i].as_str()))).collect()
    };
    let label_type = batches.first().map(|b| column(b, cols.label).data_type().clone());
    let labels = match label_type {
        Some(t) if t.is_integer() => {
            let mut ids = Vec::with_capacity(n);
            let mut row = 0;
            for b in batches {
                let arr = arrow::compute::cast(column(b, cols.label), &DataType::Int64)?;
                let arr = arr.as_primitive::<Int64Type>();
                for i in 0..arr.len() {
                    if arr.is_null(i) {
                        return Err(null_label(path, row, cols.label));
                    }
                    ids.push(arr.value(i));
                    row += 1;
                }
            }
            RawLabels::Int(ids)
        }
        _ => {
            let mut names = Vec::with_capacity(n);
            for b in batches {
                let arr = arrow::compute::cast(column(b, cols.label), &DataType::Utf8)?;
                let arr = arr.as_string::<i32>();
                for i in 0..arr.len() {
                    if arr.is_null(i) {
                        return Err(null_label(path, names.len(), cols.label));
                    }
                    names.push(arr.value(i).to_string());
                }
            }
            RawLabels::Str(names)
        }
    };
    let splits = cols.split.map(|s| strings(path, batches, s)).transpose()?;
    let has_names = batches.first().is_some_and(|b| b.schema().index_of(&cols.label_name).is_ok());
    let label_names = if has_names { Some(strings(path, batches, &cols.label_name)?) } else { None };
    let ids = cols.id.map(|c| strings(path, batches, c)).transpose()?;
    Ok(RawRows { texts, labels, splits, label_names, ids })
}

fn null_label(path: &Path, row: usize, column: &str) -> DataError {
    DataError::BadValue { path: path.to_path_buf(), row, column: column.to_string(), message: "missing label".into() }
}
