//! Metrics tables (polars, in memory), SVG plots (plotters) and HTML/Markdown reports for SLoRA runs,
//! plus `summary.json`, the baseline comparison of CI regression runs, and sweep comparison reports.
//!
//! Inputs are plain structs read from the stages' Parquet files with arrow + parquet; the report
//! knows nothing of the pipeline's artifact store.
#![deny(missing_docs)]

pub mod compare;
pub mod demo;
pub mod error;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod output;
pub mod partition;
pub mod plots;
pub mod privacy;
pub mod replicates;
pub mod report;
pub mod spectrum;
pub mod study;
pub mod summary;
pub mod sweep;
pub mod table_io;
pub mod tables;
pub mod targets;

pub use compare::{compare, default_tolerances, Baseline, Comparison, Tolerance};
pub use error::{ReportError, Result};
pub use metrics::{Curve, Metrics};
pub use output::{write_dir_atomically, write_report};
pub use partition::PartitionCounts;
pub use privacy::PrivacySummary;
pub use report::{build_report, Figure, Report, ReportInputs};
pub use spectrum::{MatrixSpectrum, Spectra};
pub use summary::{MethodSummary, Summary};
pub use study::{
    build_study_report, judge, Claim, ClaimVerdict, GapContrast, PlanRow, Statistic, StudyAxis, StudyPoint, StudySettings, StudySummary, Verdict,
};
pub use sweep::{build_sweep_report, SweepPoint, SweepSummary};
pub use targets::{time_to_target, time_to_target_replicated, Target, TimeToTarget};
pub use replicates::{mean_ci, Interval, PairedDifference, SeedFigures, SeedRun};
pub use summary::{MethodRates, SummaryOptions};
