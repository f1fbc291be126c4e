//! Commands beyond running stages: `bench` (training-step timings), `sweep` (a grid of runs and their comparison report), `compare`
//! (a run's metrics against a committed baseline) and `export` (adapters in peft's format, merged
//! models in transformers' format).

pub mod bench;
pub mod compare;
pub mod export;
pub mod inspect;
pub mod plan;
pub mod points;
pub mod status;
pub mod study;
pub mod sweep;
