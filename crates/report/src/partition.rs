//! Client x label counts of the federated partition (the partition stage's `stats.parquet`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ReportError, Result};
use crate::table_io::ParquetTable;

/// How many training rows of each label every client holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionCounts {
    /// Display name of each label (index = label id).
    pub label_names: Vec<String>,
    /// `counts[client][label]`.
    pub counts: Vec<Vec<u64>>,
}

impl PartitionCounts {
    /// Builds the table from `(client, label, count)` triples; missing pairs count 0.
    /// `label_names` may be empty (labels are then shown by id).
    pub fn from_triples(triples: &[(u32, u32, u64)], label_names: Vec<String>) -> Result<Self> {
        let clients = triples.iter().map(|t| t.0 as usize + 1).max().unwrap_or(0);
        let labels = triples.iter().map(|t| t.1 as usize + 1).max().unwrap_or(0).max(label_names.len());
        if clients == 0 || labels == 0 {
            return Err(ReportError::Invalid("partition stats have no rows".into()));
        }
        let mut counts = vec![vec![0u64; labels]; clients];
        for &(c, l, n) in triples {
            counts[c as usize][l as usize] += n;
        }
        let label_names =
            (0..labels).map(|l| label_names.get(l).cloned().unwrap_or_else(|| l.to_string())).collect();
        Ok(Self { label_names, counts })
    }

    /// Reads the long-format partition stats: one row per (client, label) with columns `client`,
    /// `label`, `count` and optionally `label_name`.
    pub fn read_parquet(path: &Path) -> Result<Self> {
        let t = ParquetTable::read(path)?;
        let clients = t.u32s("client")?;
        let labels = t.u32s("label")?;
        let counts = t.u64s("count")?;
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        if t.has_column("label_name") {
            for (l, n) in labels.iter().zip(t.strings("label_name")?) {
                names.insert(*l, n);
            }
        }
        let max_label = labels.iter().copied().max().unwrap_or(0);
        let label_names = if names.is_empty() {
            Vec::new()
        } else {
            (0..=max_label).map(|l| names.get(&l).cloned().unwrap_or_else(|| l.to_string())).collect()
        };
        let triples: Vec<(u32, u32, u64)> =
            clients.iter().zip(&labels).zip(&counts).map(|((&c, &l), &n)| (c, l, n)).collect();
        Self::from_triples(&triples, label_names)
    }

    /// Number of clients.
    pub fn num_clients(&self) -> usize {
        self.counts.len()
    }

    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.label_names.len()
    }

    /// Rows held by each client.
    pub fn client_sizes(&self) -> Vec<u64> {
        self.counts.iter().map(|r| r.iter().sum()).collect()
    }

    /// Largest single cell (the heatmap's colour scale).
    pub fn max_count(&self) -> u64 {
        self.counts.iter().flatten().copied().max().unwrap_or(0)
    }

    /// Mean number of labels a client holds at least one row of (a plain heterogeneity measure).
    pub fn mean_labels_per_client(&self) -> f64 {
        let held: usize = self.counts.iter().map(|r| r.iter().filter(|&&n| n > 0).count()).sum();
        held as f64 / self.num_clients().max(1) as f64
    }
}
