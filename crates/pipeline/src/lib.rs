//! Config, content-addressed artifact store and the pipeline stages.
//!
//! - [`config`]: `pipeline.toml` as typed sections ([`Config`]), `--set`, validation.
//! - [`store`]: `artifacts/<stage>/<key>/` folders with manifests ([`Store`], [`Artifact`]).
//! - [`stage`]: the [`Stage`] trait and [`StageCtx`]; [`stages`]: the registry.
//! - [`runner`], [`status`], [`inspect`], [`cli`]: running, explaining and showing stages.
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod hashing;
pub mod planning;
pub mod preflight;
pub mod privacy;
pub mod progress;
pub mod rates;
pub mod runner;
pub mod stage;
pub mod threads;
pub mod stages;
pub mod store;

pub use config::Config;
pub use error::{IoContext, PipelineError};
pub use fsutil::write_atomic;
pub use progress::progress_bar;
pub use stage::{Stage, StageCtx};
pub use store::{Artifact, Manifest, Store};
