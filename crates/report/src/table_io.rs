//! Reading Parquet files into plain Rust column vectors (arrow + parquet; polars has no I/O here).
//!
//! Columns are looked up by name and cast with arrow's `cast` kernel, so a writer that stores a count
//! as Int64 instead of UInt64 still reads; a column that cannot be cast is an error naming it.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{ReportError, Result};

/// All record batches of one Parquet file, with typed column accessors.
#[derive(Debug, Clone)]
pub struct ParquetTable {
    path: PathBuf,
    batches: Vec<RecordBatch>,
}

impl ParquetTable {
    /// Reads every row group of `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ReportError::io(path, e))?;
        let perr = |e: &dyn std::fmt::Display| ReportError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| perr(&e))?
            .build()
            .map_err(|e| perr(&e))?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| perr(&e))?;
        Ok(Self { path: path.to_path_buf(), batches })
    }

    /// Number of rows over all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// True when the file's schema has a column called `name`.
    pub fn has_column(&self, name: &str) -> bool {
        self.batches.first().is_some_and(|b| b.schema().column_with_name(name).is_some())
    }

    fn column_error(&self, column: &str, problem: impl Into<String>) -> ReportError {
        ReportError::Column {
            path: self.path.clone(),
            column: column.to_string(),
            problem: problem.into(),
        }
    }

    /// The column `name` of every batch, cast to `to`.
    fn cast_chunks(&self, name: &str, to: &DataType) -> Result<Vec<ArrayRef>> {
        let mut chunks = Vec::with_capacity(self.batches.len());
        for batch in &self.batches {
            let col: &ArrayRef = batch
                .column_by_name(name)
                .ok_or_else(|| self.column_error(name, "missing"))?;
            let casted = cast(col, to)
                .map_err(|e| self.column_error(name, format!("cannot read {} as {to}: {e}", col.data_type())))?;
            chunks.push(casted);
        }
        Ok(chunks)
    }

    /// Float column; nulls become NaN (e.g. `train_loss` of round 0, which has no training).
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for chunk in self.cast_chunks(name, &DataType::Float64)? {
            let arr = chunk.as_primitive::<Float64Type>();
            out.extend((0..arr.len()).map(|i| if arr.is_null(i) { f64::NAN } else { arr.value(i) }));
        }
        Ok(out)
    }

    /// Unsigned 64-bit column; nulls are an error.
    pub fn u64s(&self, name: &str) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for chunk in self.cast_chunks(name, &DataType::UInt64)? {
            if chunk.null_count() > 0 {
                return Err(self.column_error(name, "has nulls"));
            }
            out.extend(chunk.as_primitive::<UInt64Type>().values().iter().copied());
        }
        Ok(out)
    }

    /// Unsigned 32-bit column; nulls are an error.
    pub fn u32s(&self, name: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for chunk in self.cast_chunks(name, &DataType::UInt32)? {
            if chunk.null_count() > 0 {
                return Err(self.column_error(name, "has nulls"));
            }
            out.extend(chunk.as_primitive::<UInt32Type>().values().iter().copied());
        }
        Ok(out)
    }

    /// String column (any integer column reads as its decimal text); nulls are an error.
    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.num_rows());
        for chunk in self.cast_chunks(name, &DataType::Utf8)? {
            if chunk.null_count() > 0 {
                return Err(self.column_error(name, "has nulls"));
            }
            let arr = chunk.as_string::<i32>();
            out.extend(arr.iter().map(|s| s.unwrap_or_default().to_string()));
        }
        Ok(out)
    }

    /// The file this table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Column names in schema order.
    pub fn column_names(&self) -> Vec<String> {
        self.batches
            .first()
            .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default()
    }
}
