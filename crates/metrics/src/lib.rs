//! The `metrics.parquet` row: one evaluation of one method after one round, and its Parquet read
//! and write. Federation writes it (the engine, the server); the report reads it. One type, one
//! schema, at the bottom of the crate graph.
//!
//! Columns: `method` Utf8, `round` UInt32 (round 0 = before training), `accuracy` / `loss` Float64 (null
//! in rounds without evaluation), `train_loss` Float64 (null in round 0), `bytes_up_per_client`,
//! `bytes_down_per_client`, `cum_bytes_up` UInt64, `wall_seconds` Float64, `clients` UInt32, then the
//! audit columns: `eval_rows` UInt64, `full_test_accuracy` / `full_test_loss` Float64 (the last round
//! only, on every test row), `full_test_rows`, `bytes_up_head_per_client`, `bytes_down_head_per_client`,
//! `bytes_down_switch_per_client`, `cum_bytes_down` UInt64, `train_seconds`, `server_seconds` Float64.
//! A file without the audit columns (written before they existed) reads them as 0 / null.

#![deny(missing_docs)]

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use std::path::PathBuf;

/// Reading or writing `metrics.parquet` failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The file system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Parquet encoder or decoder.
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A column is missing or has the wrong type.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl MetricsError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        MetricsError::Io { path: path.to_path_buf(), source }
    }
}

/// Results of this crate.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// One row of `metrics.parquet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// fft | lora | sft | slora-stage1 | slora-stage2.
    pub method: String,
    /// Global round number (round 0 = before any training).
    pub round: u32,
    /// Test accuracy, if this round was evaluated.
    #[serde(with = "exact_f64::option")]
    pub accuracy: Option<f64>,
    /// Mean test cross-entropy, if this round was evaluated.
    #[serde(with = "exact_f64::option")]
    pub loss: Option<f64>,
    /// Mean training loss over every row the sampled clients trained on this round.
    #[serde(with = "exact_f64::option")]
    pub train_loss: Option<f64>,
    /// Bytes one client uploads this round.
    pub bytes_up_per_client: u64,
    /// Bytes one client downloads this round.
    pub bytes_down_per_client: u64,
    /// Upload bytes summed over all averaged client updates so far.
    pub cum_bytes_up: u64,
    /// Cumulative training + evaluation wall time (the only non-deterministic column).
    #[serde(with = "exact_f64")]
    pub wall_seconds: f64,
    /// Client updates averaged this round: the sampled clients in-process; in a deployment, the
    /// replies that arrived and were accepted.
    pub clients: u32,
    /// Test rows `accuracy` / `loss` were computed on (0 when not evaluated).
    #[serde(default)]
    pub eval_rows: u64,
    /// Accuracy on every test row (the run's last round only; the curve may use a subsample).
    #[serde(default, with = "exact_f64::option")]
    pub full_test_accuracy: Option<f64>,
    /// Mean cross-entropy on every test row (the last round only).
    #[serde(default, with = "exact_f64::option")]
    pub full_test_loss: Option<f64>,
    /// Rows behind `full_test_accuracy`.
    #[serde(default)]
    pub full_test_rows: u64,
    /// Of `bytes_up_per_client`, the head's (`modules_to_save`) share; the rest is the adapter (for FFT:
    /// the whole backbone).
    #[serde(default)]
    pub bytes_up_head_per_client: u64,
    /// Of `bytes_down_per_client`, the head's share.
    #[serde(default)]
    pub bytes_down_head_per_client: u64,
    /// Of `bytes_down_per_client`, a one-off payload every client needs before it can train in this
    /// round's phase (SLoRA's switch: the sparse ΔW behind the corrected base). Sent to every client.
    #[serde(default)]
    pub bytes_down_switch_per_client: u64,
    /// Download bytes over all clients so far (sampled clients' downloads, plus one-off payloads sent
    /// to every client).
    #[serde(default)]
    pub cum_bytes_down: u64,
    /// Local training seconds summed over this round's clients (no evaluation).
    #[serde(default, with = "exact_f64")]
    pub train_seconds: f64,
    /// Server seconds this round: aggregation (and, in SLoRA's first Stage-2 row, the decomposition).
    #[serde(default, with = "exact_f64")]
    pub server_seconds: f64,
}

impl RoundMetrics {
    /// Equality on every column except `wall_seconds` (bit-exact on floats).
    pub fn same_results(&self, other: &Self) -> bool {
        let bits = |x: Option<f64>| x.map(f64::to_bits);
        self.method == other.method
            && self.round == other.round
            && bits(self.accuracy) == bits(other.accuracy)
            && bits(self.loss) == bits(other.loss)
            && bits(self.train_loss) == bits(other.train_loss)
            && self.bytes_up_per_client == other.bytes_up_per_client
            && self.bytes_down_per_client == other.bytes_down_per_client
            && self.cum_bytes_up == other.cum_bytes_up
            && self.clients == other.clients
            && self.eval_rows == other.eval_rows
            && bits(self.full_test_accuracy) == bits(other.full_test_accuracy)
            && bits(self.full_test_loss) == bits(other.full_test_loss)
            && self.full_test_rows == other.full_test_rows
            && self.bytes_up_head_per_client == other.bytes_up_head_per_client
            && self.bytes_down_head_per_client == other.bytes_down_head_per_client
            && self.bytes_down_switch_per_client == other.bytes_down_switch_per_client
            && self.cum_bytes_down == other.cum_bytes_down
    }

    /// The accuracy that ranks a run: on every test row when recorded, else on the curve's rows.
    pub fn final_accuracy(&self) -> Option<f64> {
        self.full_test_accuracy.or(self.accuracy)
    }
}

/// The Arrow schema of `metrics.parquet`.
pub fn schema() -> Schema {
    Schema::new(vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("round", DataType::UInt32, false),
        Field::new("accuracy", DataType::Float64, true),
        Field::new("loss", DataType::Float64, true),
        Field::new("train_loss", DataType::Float64, true),
        Field::new("bytes_up_per_client", DataType::UInt64, false),
        Field::new("bytes_down_per_client", DataType::UInt64, false),
        Field::new("cum_bytes_up", DataType::UInt64, false),
        Field::new("wall_seconds", DataType::Float64, false),
        Field::new("clients", DataType::UInt32, false),
        Field::new("eval_rows", DataType::UInt64, false),
        Field::new("full_test_accuracy", DataType::Float64, true),
        Field::new("full_test_loss", DataType::Float64, true),
        Field::new("full_test_rows", DataType::UInt64, false),
        Field::new("bytes_up_head_per_client", DataType::UInt64, false),
        Field::new("bytes_down_head_per_client", DataType::UInt64, false),
        Field::new("bytes_down_switch_per_client", DataType::UInt64, false),
        Field::new("cum_bytes_down", DataType::UInt64, false),
        Field::new("train_seconds", DataType::Float64, false),
        Field::new("server_seconds", DataType::Float64, false),
    ])
}

/// Writes `rows` to `path` (through a temporary file renamed into place).
pub fn write_parquet(path: &Path, rows: &[RoundMetrics]) -> Result<()> {
    let schema = Arc::new(schema());
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.method.as_str()))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.round))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.accuracy))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.loss))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.train_loss))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes_up_per_client))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes_down_per_client))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.cum_bytes_up))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.wall_seconds))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.clients))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.eval_rows))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.full_test_accuracy))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.full_test_loss))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.full_test_rows))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes_up_head_per_client))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes_down_head_per_client))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.bytes_down_switch_per_client))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.cum_bytes_down))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.train_seconds))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.server_seconds))),
    ];
    let pq = |e: &dyn std::fmt::Display| MetricsError::Parquet { path: path.into(), message: e.to_string() };
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| pq(&e))?;
    // Atomic and durable; nothing half-written stays behind.
    let io_error = |e: std::io::Error| MetricsError::io(path, e);
    slora_fsio::write_atomic_with::<WriteError>(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(|e| pq(&e))?;
        writer.write(&batch).map_err(|e| pq(&e))?;
        Ok(writer.into_inner().map_err(|e| pq(&e))?)
    })
    .map_err(|e: WriteError| match e {
        WriteError::Io(e) => io_error(e),
        WriteError::Metrics(e) => e,
    })
}

/// Reads a `metrics.parquet` written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> Result<Vec<RoundMetrics>> {
    let pq = |e: &dyn std::fmt::Display| MetricsError::Parquet { path: path.into(), message: e.to_string() };
    let file = File::open(path).map_err(|e| MetricsError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(&e))?.build().map_err(|e| pq(&e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| pq(&e))?;
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| MetricsError::BadFile {
                path: path.into(),
                message: format!("missing column `{name}`"),
            })
        };
        let bad = |name: &str| MetricsError::BadFile { path: path.into(), message: format!("column `{name}` has the wrong type") };
        let method = col("method")?.as_string_opt::<i32>().ok_or_else(|| bad("method"))?;
        let u32c = |n: &str| -> Result<_> { col(n)?.as_primitive_opt::<UInt32Type>().cloned().ok_or_else(|| bad(n)) };
        let u64c = |n: &str| -> Result<_> { col(n)?.as_primitive_opt::<UInt64Type>().cloned().ok_or_else(|| bad(n)) };
        let f64c = |n: &str| -> Result<_> { col(n)?.as_primitive_opt::<Float64Type>().cloned().ok_or_else(|| bad(n)) };
        let (round, clients) = (u32c("round")?, u32c("clients")?);
        let (up, down, cum) = (u64c("bytes_up_per_client")?, u64c("bytes_down_per_client")?, u64c("cum_bytes_up")?);
        let (acc, loss, train, wall) = (f64c("accuracy")?, f64c("loss")?, f64c("train_loss")?, f64c("wall_seconds")?);
        let opt = |a: &Float64Array, i: usize| if a.is_null(i) { None } else { Some(a.value(i)) };
        // Audit columns: absent in files written before they existed.
        let has = |n: &str| batch.column_by_name(n).is_some();
        let u64o = |n: &str| -> Result<Option<UInt64Array>> { if has(n) { u64c(n).map(Some) } else { Ok(None) } };
        let f64o = |n: &str| -> Result<Option<Float64Array>> { if has(n) { f64c(n).map(Some) } else { Ok(None) } };
        let (eval_rows, full_rows) = (u64o("eval_rows")?, u64o("full_test_rows")?);
        let (full_acc, full_loss) = (f64o("full_test_accuracy")?, f64o("full_test_loss")?);
        let (up_head, down_head) = (u64o("bytes_up_head_per_client")?, u64o("bytes_down_head_per_client")?);
        let (down_switch, cum_down) = (u64o("bytes_down_switch_per_client")?, u64o("cum_bytes_down")?);
        let (train_s, server_s) = (f64o("train_seconds")?, f64o("server_seconds")?);
        let ou = |a: &Option<UInt64Array>, i: usize| a.as_ref().map_or(0, |a| a.value(i));
        let of = |a: &Option<Float64Array>, i: usize| a.as_ref().and_then(|a| opt(a, i));
        for i in 0..batch.num_rows() {
            rows.push(RoundMetrics {
                method: method.value(i).to_string(),
                round: round.value(i),
                accuracy: opt(&acc, i),
                loss: opt(&loss, i),
                train_loss: opt(&train, i),
                bytes_up_per_client: up.value(i),
                bytes_down_per_client: down.value(i),
                cum_bytes_up: cum.value(i),
                wall_seconds: wall.value(i),
                clients: clients.value(i),
                eval_rows: ou(&eval_rows, i),
                full_test_accuracy: of(&full_acc, i),
                full_test_loss: of(&full_loss, i),
                full_test_rows: ou(&full_rows, i),
                bytes_up_head_per_client: ou(&up_head, i),
                bytes_down_head_per_client: ou(&down_head, i),
                bytes_down_switch_per_client: ou(&down_switch, i),
                cum_bytes_down: ou(&cum_down, i),
                train_seconds: of(&train_s, i).unwrap_or(0.0),
                server_seconds: of(&server_s, i).unwrap_or(0.0),
            });
        }
    }
    Ok(rows)
}

/// The rows as JSON objects with plain numbers (for `--json` output).
pub fn rows_json(rows: &[RoundMetrics]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "method": r.method,
                "round": r.round,
                "accuracy": r.accuracy,
                "loss": r.loss,
                "train_loss": r.train_loss,
                "bytes_up_per_client": r.bytes_up_per_client,
                "bytes_down_per_client": r.bytes_down_per_client,
                "cum_bytes_up": r.cum_bytes_up,
                "wall_seconds": r.wall_seconds,
                "clients": r.clients,
                "eval_rows": r.eval_rows,
                "full_test_accuracy": r.full_test_accuracy,
                "full_test_loss": r.full_test_loss,
                "full_test_rows": r.full_test_rows,
                "bytes_up_head_per_client": r.bytes_up_head_per_client,
                "bytes_down_head_per_client": r.bytes_down_head_per_client,
                "bytes_down_switch_per_client": r.bytes_down_switch_per_client,
                "cum_bytes_down": r.cum_bytes_down,
                "train_seconds": r.train_seconds,
                "server_seconds": r.server_seconds,
            })
        })
        .collect()
}

/// A fixed-width text table of metrics rows (for `pipeline inspect`).
pub fn format_table(rows: &[RoundMetrics]) -> String {
    let mut s = format!(
        "{:<13} {:>5} {:>8} {:>8} {:>10} {:>12} {:>12} {:>14} {:>9} {:>7} {:>9}\n",
        "method", "round", "accuracy", "loss", "train_loss", "up/client", "down/client", "cum_up", "wall_s", "clients", "full_acc"
    );
    let f = |x: Option<f64>, p: usize| x.map_or("-".to_string(), |v| format!("{v:.p$}"));
    for r in rows {
        s.push_str(&format!(
            "{:<13} {:>5} {:>8} {:>8} {:>10} {:>12} {:>12} {:>14} {:>9.1} {:>7} {:>9}\n",
            r.method,
            r.round,
            f(r.accuracy, 4),
            f(r.loss, 4),
            f(r.train_loss, 4),
            r.bytes_up_per_client,
            r.bytes_down_per_client,
            r.cum_bytes_up,
            r.wall_seconds,
            r.clients,
            f(r.full_test_accuracy, 4)
        ));
    }
    s
}

/// Serde for f64 as a decimal string that round-trips bit-exactly (Rust's shortest representation and
/// correctly rounded parser); serde_json's default float parsing may be off by one ulp.
pub mod exact_f64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Serialises `v` as its shortest round-trip string.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    /// Parses a string written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| D::Error::custom(format!("not a float: {text:?}")))
    }

    /// The same for `Option<f64>` (None = JSON null).
    pub mod option {
        use super::*;

        /// Serialises `Some(v)` as a string, `None` as null.
        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(x) => s.serialize_str(&format!("{x:?}")),
                None => s.serialize_none(),
            }
        }

        /// Parses a string or null.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => text.parse().map(Some).map_err(|_| D::Error::custom(format!("not a float: {text:?}"))),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: u32, acc: Option<f64>) -> RoundMetrics {
        RoundMetrics {
            method: "slora-stage1".into(),
            round,
            accuracy: acc,
            loss: acc.map(|a| 1.0 / (a + 0.1)),
            train_loss: if round == 0 { None } else { Some(0.1 + 0.2) },
            bytes_up_per_client: 1234,
            bytes_down_per_client: 1234,
            cum_bytes_up: 4936 * round as u64,
            wall_seconds: 1.0 / 3.0,
            clients: if round == 0 { 0 } else { 4 },
            eval_rows: if acc.is_some() { 200 } else { 0 },
            full_test_accuracy: (round == 2).then_some(0.3),
            full_test_loss: (round == 2).then_some(1.25),
            full_test_rows: if round == 2 { 500 } else { 0 },
            bytes_up_head_per_client: 34,
            bytes_down_head_per_client: 34,
            bytes_down_switch_per_client: 0,
            cum_bytes_down: 4936 * round as u64,
            train_seconds: 0.25 * round as f64,
            server_seconds: 0.125,
        }
    }

    #[test]
    fn parquet_and_json_round_trip_bit_exactly() -> anyhow::Result<()> {
        let rows = vec![row(0, Some(0.05)), row(1, None), row(2, Some(std::f64::consts::PI / 7.0))];
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("metrics.parquet");
        write_parquet(&path, &rows)?;
        let back = read_parquet(&path)?;
        assert_eq!(back, rows);
        assert!(std::fs::read_dir(dir.path())?.count() == 1, "no temp file left behind");
        let json = serde_json::to_string(&rows)?;
        let parsed: Vec<RoundMetrics> = serde_json::from_str(&json)?;
        assert!(parsed.iter().zip(&rows).all(|(a, b)| a.same_results(b) && a.wall_seconds.to_bits() == b.wall_seconds.to_bits()));
        assert!(format_table(&rows).contains("slora-stage1"));
        Ok(())
    }
}

/// The two ways writing `metrics.parquet` fails: the file system, or the Parquet encoder.
enum WriteError {
    Io(std::io::Error),
    Metrics(MetricsError),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

impl From<MetricsError> for WriteError {
    fn from(e: MetricsError) -> Self {
        WriteError::Metrics(e)
    }
}
