//! FedAvg simulation: client sampling, local training, weighted aggregation, byte accounting,
//! per-round metrics and resumable round checkpoints.
//!
//! The crate knows nothing of the CLI, config files or the artifact store: a caller hands
//! [`run_fedavg`] a [`Learner`] (normally a [`ClassifierLearner`] around `slora_model::Classifier`),
//! the client shards, the test shard, a [`FedAvgConfig`] and optionally a [`CheckpointStore`].
#![deny(missing_docs)]

pub mod aggregate;
pub mod alternating;
pub mod audit;
pub mod checkpoint;
pub mod classifier;
pub mod client;
pub mod comm;
pub mod config;
pub mod engine;
pub mod error;
pub mod evaluation;
pub mod exact;
pub mod interrupt;
pub mod learner;
pub mod mask;
pub mod privacy;
pub mod ranks;
pub mod sampling;
pub mod seeds;
pub mod server;
#[cfg(test)]
mod toy;

pub use aggregate::{State, WeightedAverage};
pub use classifier::{ClassifierLearner, OptimSettings, Schedule};
pub use checkpoint::{read_safetensors, write_safetensors, CheckpointStore};
pub use comm::{state_bytes, state_digest};
pub use client::{local_update, LocalRound, LocalUpdate};
pub use config::{Aggregation, FedAvgConfig, SetupCosts};
pub use engine::{run_fedavg, run_fedavg_personal, FedOutcome};
pub use evaluation::{evaluate, length_sorted_batches, Evaluation};
pub use error::{FederationError, Result};
pub use learner::{EvalSums, Learner, Shard};
pub use privacy::{ClientDp, NoiseAt};
pub use mask::{mask_round, MaskRoundConfig, MaskRoundOutcome, MaskTarget};
pub use server::{FedAvgServer, PersonalEvaluation, Refusal, Reply, RoundPlan, MAX_CLAIMED_ROWS};
