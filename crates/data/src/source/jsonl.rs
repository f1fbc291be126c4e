//! JSON lines (optionally gzip-compressed): one object per line; blank lines are skipped.

use super::{join_parts, Columns, RawLabels, RawRows};
use crate::DataError;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

pub(crate) fn read_jsonl(path: &Path, cols: &Columns, gz: bool) -> Result<RawRows, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut texts = Vec::new();
    let mut int_labels = Vec::new();
    let mut str_labels = Vec::new();
    let mut splits = cols.split.map(|_| Vec::new());
    let mut label_names: Option<Vec<String>> = None;
    let mut ids = cols.id.map(|_| Vec::new());
    for (line_no, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let row = texts.len();
        let obj: Map<String, Value> = serde_json::from_str(&line)
            .map_err(|e| DataError::format(path, format!("line {}: not a JSON object: {e}", line_no + 1)))?;
        if row == 0 {
            check_keys(path, &obj, cols)?;
            if obj.contains_key(&cols.label_name) {
                label_names = Some(Vec::new());
            }
        }
        let bad_in = |column: &str, message: String| DataError::BadValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            message,
        };
        for part in &cols.text_parts {
            match obj.get(*part) {
                None | Some(Value::Null) | Some(Value::String(_)) => {}
                Some(other) => return Err(bad_in(part, format!("text (data.text_column) must be a string (got {other})"))),
            }
        }
        texts.push(join_parts(cols.text_parts.iter().map(|p| obj.get(*p).and_then(Value::as_str).unwrap_or(""))));
        let bad = |message: &str| bad_in(cols.label, message.to_string());
        match obj.get(cols.label) {
            Some(Value::Number(n)) if str_labels.is_empty() => {
                int_labels.push(n.as_i64().ok_or_else(|| bad("label ids must be integers"))?)
            }
            Some(Value::String(s)) if int_labels.is_empty() => str_labels.push(s.clone()),
            Some(Value::Number(_)) | Some(Value::String(_)) => return Err(bad("labels mix numbers and strings")),
            None | Some(Value::Null) => return Err(bad("missing label")),
            Some(other) => return Err(bad(&format!("labels must be integer ids or strings (got {other})"))),
        }
        if let (Some(out), Some(col)) = (splits.as_mut(), cols.split) {
            out.push(obj.get(col).map(value_text).unwrap_or_default());
        }
        if let (Some(out), Some(col)) = (ids.as_mut(), cols.id) {
            match obj.get(col) {
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    return Err(bad_in(col, format!("partition.id_column values must be strings or numbers (got {v})")))
                }
                v => out.push(v.map(value_text).unwrap_or_default()),
            }
        }
        if let Some(out) = label_names.as_mut() {
            out.push(obj.get(&cols.label_name).map(value_text).unwrap_or_default());
        }
    }
    let labels = if str_labels.is_empty() { RawLabels::Int(int_labels) } else { RawLabels::Str(str_labels) };
    Ok(RawRows { texts, labels, splits, label_names, ids })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn check_keys(path: &Path, obj: &Map<String, Value>, cols: &Columns) -> Result<(), DataError> {
    let missing = |column: &str, key: &'static str| DataError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        key,
        available: obj.keys().cloned().collect::<Vec<_>>().join(", "),
    };
    for part in &cols.text_parts {
        if !obj.contains_key(*part) {
            return Err(missing(part, "data.text_column"));
        }
    }
    if !obj.contains_key(cols.label) {
        return Err(missing(cols.label, "data.label_column"));
    }
    if let Some(split) = cols.split {
        if !obj.contains_key(split) {
            return Err(missing(split, "data.split_column (or set data.test_source)"));
        }
    }
    if let Some(id) = cols.id {
        if !obj.contains_key(id) {
            return Err(missing(id, "partition.id_column"));
        }
    }
    Ok(())
}
