//! What the FedAvg engine needs from a model, and the data it trains on.
//!
//! The engine is generic over [`Learner`] so it can be tested with a tiny model; the real implementation
//! wraps `slora_model::Classifier` ([`crate::ClassifierLearner`]).

use crate::aggregate::State;
use crate::error::Result;

/// Tokenised rows and their labels: one client's shard, or the test shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shard {
    /// Token ids per row (unpadded).
    pub input_ids: Vec<Vec<u32>>,
    /// Label per row.
    pub labels: Vec<u32>,
}

impl Shard {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Shard {
        Shard {
            input_ids: indices.iter().map(|&i| self.input_ids[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// Sums over one evaluated batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalSums {
    /// Σ per-row cross-entropy.
    pub loss_sum: f64,
    /// Rows whose argmax logit is the label.
    pub correct: u64,
    /// Rows evaluated.
    pub rows: u64,
}

/// A trainable model as the federation sees it: a named trainable state, local training steps and
/// evaluation. Everything not in the trainable state (frozen base weights, masks) is fixed for the run.
pub trait Learner {
    /// A copy of the trainable tensors (what a client uploads / the server broadcasts).
    fn trainable_state(&self) -> Result<State>;
    /// Overwrites the trainable tensors (what a client does with the server's broadcast).
    fn set_trainable_state(&mut self, state: &State) -> Result<()>;
    /// Starts one client's local training: a fresh optimizer, and `total_steps` for the LR schedule.
    fn begin_local(&mut self, total_steps: usize) -> Result<()>;
    /// Tells the client which global round it trains, after the global state is set and before
    /// [`Self::begin_local`] (LoRA-A² freezes a factor by round). Default: nothing to do.
    fn begin_round(&mut self, _round: u32) -> Result<()> {
        Ok(())
    }
    /// What the client uploads after local training. Default: every trainable tensor; LoRA-A²
    /// sends only the factor it trained, and only its selected rank components.
    fn upload_state(&self) -> Result<State> {
        self.trainable_state()
    }
    /// One optimizer step on a batch; returns the batch's mean training loss.
    fn train_step(&mut self, input_ids: &[&[u32]], labels: &[u32], dropout_seed: u64) -> Result<f64>;
    /// Evaluates one batch without dropout or gradients.
    fn eval_batch(&self, input_ids: &[&[u32]], labels: &[u32]) -> Result<EvalSums>;
    /// Per-entry importance `|∂L/∂w ⊙ w|` of the named tensors on one batch (no dropout, no step):
    /// what a client scores in the federated mask round ([`crate::mask`]). Default: unsupported.
    fn importance(&mut self, _input_ids: &[&[u32]], _labels: &[u32], names: &[String]) -> Result<State> {
        Err(crate::error::FederationError::StateMismatch(format!("this learner cannot score importance (asked for {names:?})")))
    }
    /// Whether trainable tensor `name` is part of the head (counted apart from the adapter in the
    /// byte accounting). Default: nothing is.
    fn is_head(&self, _name: &str) -> bool {
        false
    }
}
