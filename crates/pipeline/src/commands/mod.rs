//! Commands beyond running stages: `sweep` (a grid of runs and their comparison report), `compare`
//! (a run's metrics against a committed baseline) and `export` (adapters in peft's format, merged
//! models in transformers' format).

pub mod compare;
pub mod export;
pub mod sweep;
