//! The comparison report of a sweep: one run per heterogeneity level, tabulated as methods x levels,
//! and the paper's central figure, the gap to FFT vs heterogeneity.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::metrics::{method_label, method_rank, FFT};
use crate::plots;
use crate::plots::sweep::SweepSeries;
use crate::report::{Block, CaptionedTable, Figure, Report, Section};
use crate::summary::Summary;
use crate::tables::{Align, TextTable};

/// One grid point of a sweep and the summary of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Short label for axes and table headers (e.g. `α=0.1`, `2 classes/client`).
    pub label: String,
    /// The `--set` overrides that define the point, in order.
    pub overrides: Vec<(String, String)>,
    /// `run.name` of the point's run (its own report is `../<run_name>/index.html`).
    pub run_name: String,
    /// The run's summary.
    pub summary: Summary,
}

/// `sweep.json`: every point with its summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSummary {
    /// Sweep name (the report folder).
    pub name: String,
    /// Points in sweep order.
    pub points: Vec<SweepPoint>,
}

/// Methods present at any point, canonical order.
fn sweep_methods(points: &[SweepPoint]) -> Vec<String> {
    let mut methods: Vec<String> = points.iter().flat_map(|p| p.summary.methods.keys().cloned()).collect();
    methods.sort_by_key(|m| (method_rank(m), m.clone()));
    methods.dedup();
    methods
}

/// Final accuracy (%) as a polars table: column `method`, then one Float64 column per point label
/// (null where the method did not run).
pub fn accuracy_matrix(points: &[SweepPoint]) -> Result<DataFrame> {
    let methods = sweep_methods(points);
    let mut columns = vec![Column::new("method".into(), methods.clone())];
    for p in points {
        let values: Vec<Option<f64>> =
            methods.iter().map(|m| p.summary.methods.get(m).map(|s| 100.0 * s.accuracy)).collect();
        columns.push(Column::new(p.label.as_str().into(), values));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

/// Gap to FFT (percentage points, FFT − method) per method and point; `None` without an FFT run there.
pub fn gap_series(points: &[SweepPoint]) -> SweepSeries {
    sweep_methods(points)
        .into_iter()
        .filter(|m| m != FFT)
        .map(|m| {
            let gaps = points
                .iter()
                .map(|p| {
                    let fft = p.summary.methods.get(FFT)?;
                    let own = p.summary.methods.get(&m)?;
                    Some(100.0 * (fft.accuracy - own.accuracy))
                })
                .collect();
            (m, gaps)
        })
        .collect()
}

fn matrix_text(df: &DataFrame, points: &[SweepPoint], gap: bool) -> Result<TextTable> {
    let methods = df.column("method")?.str()?;
    let fft_row = (0..df.height()).find(|&i| methods.get(i) == Some(FFT));
    let mut rows = Vec::new();
    for i in 0..df.height() {
        let method = methods.get(i).unwrap_or("");
        if gap && method == FFT {
            continue;
        }
        let mut row = vec![method_label(method)];
        for p in points {
            let col = df.column(&p.label)?.f64()?;
            let cell = match (col.get(i), fft_row.and_then(|f| col.get(f))) {
                (Some(v), Some(f)) if gap => format!("{:+.2}", f - v),
                (Some(v), _) if !gap => format!("{v:.2}"),
                _ => "–".into(),
            };
            row.push(cell);
        }
        rows.push(row);
    }
    let mut headers = vec!["Method".to_string()];
    headers.extend(points.iter().map(|p| p.label.clone()));
    let n = headers.len();
    Ok(TextTable { headers, rows, align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, n - 1)).collect() })
}

/// Builds the sweep's comparison report.
pub fn build_sweep_report(name: &str, setup: Vec<(String, String)>, points: &[SweepPoint]) -> Result<Report> {
    if points.is_empty() {
        return Err(ReportError::Invalid("a sweep needs at least one point".into()));
    }
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let df = accuracy_matrix(points)?;
    let accuracy_series: SweepSeries = sweep_methods(points)
        .into_iter()
        .map(|m| {
            let v = points.iter().map(|p| p.summary.methods.get(&m).map(|s| 100.0 * s.accuracy)).collect();
            (m, v)
        })
        .collect();
    let gaps = gap_series(points);
    let mut blocks = vec![Block::Paragraph(format!(
        "{} runs of the same pipeline that differ only in how labels are spread over clients (left = closest to \
         IID, right = most skewed). Every run shares the artifacts directory, so stages whose inputs did not \
         change were reused from cache.",
        points.len()
    ))];
    blocks.push(Block::Figure(Figure {
        id: "gap_vs_heterogeneity".into(),
        title: "Gap to FFT vs heterogeneity".into(),
        caption: "FFT's final test accuracy minus each method's, in percentage points, at each heterogeneity \
                  level. Lower is better; 0 = as accurate as full fine-tuning."
            .into(),
        svg: plots::gap_vs_heterogeneity(&labels, &gaps)?,
    }));
    blocks.push(Block::Table(CaptionedTable {
        id: "gap-table".into(),
        title: "Gap to FFT (pp)".into(),
        caption: "FFT final accuracy − method final accuracy, percentage points.".into(),
        table: matrix_text(&df, points, true)?,
    }));
    blocks.push(Block::Table(CaptionedTable {
        id: "accuracy-table".into(),
        title: "Final accuracy (%) per method and heterogeneity level".into(),
        caption: "Global test accuracy after the last round of each run.".into(),
        table: matrix_text(&df, points, false)?,
    }));
    blocks.push(Block::Figure(Figure {
        id: "accuracy_vs_heterogeneity".into(),
        title: "Accuracy vs heterogeneity".into(),
        caption: "Final global test accuracy of each method at each heterogeneity level.".into(),
        svg: plots::accuracy_vs_heterogeneity(&labels, &accuracy_series)?,
    }));
    let point_table = TextTable {
        headers: vec!["Point".into(), "Overrides".into(), "Run report".into()],
        rows: points
            .iter()
            .map(|p| {
                vec![
                    p.label.clone(),
                    p.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                    format!("../{}/index.html", p.run_name),
                ]
            })
            .collect(),
        align: vec![Align::Left; 3],
    };
    blocks.push(Block::Table(CaptionedTable {
        id: "points".into(),
        title: "Sweep points".into(),
        caption: "The configuration overrides of each point and where its own report is.".into(),
        table: point_table,
    }));
    Ok(Report {
        title: format!("SLoRA heterogeneity sweep: {name}"),
        setup,
        sections: vec![Section { id: "comparison".into(), heading: "Comparison".into(), blocks }],
    })
}
