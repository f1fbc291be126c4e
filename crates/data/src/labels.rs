//! Label names and their ids, stored beside the shards as `labels.json`.

use crate::DataError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The label names in id order (`names[id]`); `num_labels = names.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSet {
    /// Number of labels (the classifier's output size).
    pub num_labels: usize,
    /// Name of each label id.
    pub names: Vec<String>,
}

impl LabelSet {
    /// Labels from their names.
    pub fn new(names: Vec<String>) -> Self {
        Self { num_labels: names.len(), names }
    }

    /// Writes `labels.json`.
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DataError::format(path, e))?;
        slora_fsio::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
    }

    /// Reads `labels.json`.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let set: LabelSet = serde_json::from_slice(&bytes).map_err(|e| DataError::format(path, e))?;
        if set.num_labels != set.names.len() {
            return Err(DataError::format(path, "num_labels differs from the number of names"));
        }
        Ok(set)
    }
}
