//! Stage-1 spectra: singular values of each adapted matrix's aggregated sparse update dW and the
//! fraction of its energy (sum of squared singular values) a rank-k truncation keeps.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ReportError, Result};
use crate::table_io::ParquetTable;

/// The spectrum of one adapted matrix, singular values descending.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixSpectrum {
    /// Module name, e.g. `bert.encoder.layer.0.attention.self.query`.
    pub module: String,
    /// Singular values, largest first.
    pub singular_values: Vec<f64>,
    /// `energy_kept[k-1]` = energy a rank-k truncation keeps, in [0, 1].
    pub energy_kept: Vec<f64>,
}

impl MatrixSpectrum {
    /// Energy kept at rank `rank` (1-based; clamped to the full rank).
    pub fn energy_at(&self, rank: usize) -> Option<f64> {
        if rank == 0 {
            return Some(0.0);
        }
        self.energy_kept.get(rank.min(self.energy_kept.len()) - 1).copied()
    }

    /// The matrix kind (last two name components, e.g. `self.query`, `output.dense`), used to colour lines.
    pub fn kind(&self) -> String {
        module_kind(&self.module)
    }
}

/// `attention.self.query` -> `query`; `attention.output.dense` -> `attention.output`;
/// `intermediate.dense` -> `intermediate`; `output.dense` (FFN) -> `output`.
pub fn module_kind(module: &str) -> String {
    let parts: Vec<&str> = module.split('.').collect();
    let n = parts.len();
    match parts.as_slice() {
        [.., "attention", "output", "dense"] => "attention.output".into(),
        [.., "output", "dense"] | [.., "intermediate", "dense"] => parts[n - 2].into(),
        [.., last] => (*last).into(),
        [] => String::new(),
    }
}

/// All matrices' spectra, in module-name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spectra {
    /// One entry per adapted matrix.
    pub matrices: Vec<MatrixSpectrum>,
}

impl Spectra {
    /// Reads `spectrum.parquet`: one row per (module, index) with columns `module`, `index`
    /// (0- or 1-based rank position), `singular_value` and `cumulative_energy` (the energy a
    /// truncation to this index keeps; older files: `energy_kept`).
    pub fn read_parquet(path: &Path) -> Result<Self> {
        let t = ParquetTable::read(path)?;
        let modules = t.strings("module")?;
        let index = t.u32s("index")?;
        let sv = t.f64s("singular_value")?;
        let energy = if t.has_column("cumulative_energy") { t.f64s("cumulative_energy")? } else { t.f64s("energy_kept")? };
        let base = index.iter().copied().min().unwrap_or(0);
        let mut by_module: BTreeMap<String, Vec<(u32, f64, f64)>> = BTreeMap::new();
        for i in 0..t.num_rows() {
            by_module.entry(modules[i].clone()).or_default().push((index[i] - base, sv[i], energy[i]));
        }
        let mut matrices = Vec::with_capacity(by_module.len());
        for (module, mut rows) in by_module {
            rows.sort_by_key(|r| r.0);
            if rows.iter().enumerate().any(|(k, r)| r.0 as usize != k) {
                return Err(ReportError::Column {
                    path: path.to_path_buf(),
                    column: "index".into(),
                    problem: format!("module `{module}` has gaps or repeats in its indices"),
                });
            }
            matrices.push(MatrixSpectrum {
                module,
                singular_values: rows.iter().map(|r| r.1).collect(),
                energy_kept: rows.iter().map(|r| r.2).collect(),
            });
        }
        Ok(Self { matrices })
    }

    /// Builds spectra from singular values alone (energy computed as cumulative squared fraction).
    pub fn from_singular_values(per_module: Vec<(String, Vec<f64>)>) -> Self {
        let matrices = per_module
            .into_iter()
            .map(|(module, singular_values)| {
                let total: f64 = singular_values.iter().map(|s| s * s).sum();
                let mut acc = 0.0;
                let energy_kept = singular_values
                    .iter()
                    .map(|s| {
                        acc += s * s;
                        if total > 0.0 { acc / total } else { 0.0 }
                    })
                    .collect();
                MatrixSpectrum { module, singular_values, energy_kept }
            })
            .collect();
        Self { matrices }
    }

    /// The LoRA rank recorded in `spectrum.parquet` (column `rank`), when present.
    pub fn read_rank(path: &Path) -> Result<Option<usize>> {
        let t = ParquetTable::read(path)?;
        if !t.has_column("rank") {
            return Ok(None);
        }
        Ok(t.u32s("rank")?.first().map(|&r| r as usize))
    }

    /// Largest number of singular values any matrix has.
    pub fn max_rank(&self) -> usize {
        self.matrices.iter().map(|m| m.energy_kept.len()).max().unwrap_or(0)
    }

    /// (min, median, max) over matrices of the energy kept at `rank`.
    pub fn energy_summary(&self, rank: usize) -> Option<(f64, f64, f64)> {
        let mut v: Vec<f64> = self.matrices.iter().filter_map(|m| m.energy_at(rank)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { 0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2]) };
        Some((v[0], median, v[v.len() - 1]))
    }
}
