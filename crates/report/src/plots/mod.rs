//! SVG figures drawn with plotters' SVG backend; each function returns one standalone `<svg>` document.

pub mod curves;
pub mod heatmap;
pub mod spectra;
pub mod style;
pub mod sweep;

pub use curves::{accuracy_vs_bytes, accuracy_vs_round, accuracy_vs_upload, loss_vs_round};
pub use heatmap::partition_heatmap;
pub use spectra::energy_vs_rank;
pub use sweep::{accuracy_vs_heterogeneity, gap_vs_heterogeneity};
