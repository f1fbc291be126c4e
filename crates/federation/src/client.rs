//! A client's local round: from the downloaded global state, its shard's epochs of AdamW steps,
//! and the state it uploads (what a Flower ClientApp runs).

use crate::aggregate::State;
use crate::config::DIVERGED_LOSS;
use crate::error::{FederationError, Result};
use crate::learner::{Learner, Shard};
use crate::sampling::epoch_order;
use crate::seeds::{self, Stream};

/// What one client does in one round, apart from the network: its round number, its index (the
/// partition id), the run seed, and the local training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalRound {
    /// The run seed (sampling, shuffling and dropout streams derive from it).
    pub seed: u64,
    /// The global round number.
    pub round: u32,
    /// The client's index among all clients.
    pub client: usize,
    /// Passes over the shard.
    pub local_epochs: u32,
    /// Rows per step.
    pub batch_size: usize,
}

impl LocalRound {
    /// Optimizer steps over `shard` (the last batch of an epoch may be short).
    pub fn steps(&self, shard: &Shard) -> usize {
        self.local_epochs as usize * shard.len().div_ceil(self.batch_size)
    }
}

/// A client's result: the trainable state it uploads, and each step's mean training loss with the
/// rows it averaged.
#[derive(Debug)]
pub struct LocalUpdate {
    /// The trainable state after the last step.
    pub state: State,
    /// `(mean loss, rows)` per step, in order.
    pub step_losses: Vec<(f64, usize)>,
}

/// One client's local training from `global`: the seeded row order per epoch, the seeded dropout per
/// step, the optimizer started afresh (`begin_local`). The in-process engine and a deployed client
/// run this same function, so both compute the same update from the same inputs. `on_step` is
/// called after every step (progress); a stop
/// request ([`crate::interrupt`]) ends it after that step.
pub fn local_update<L: Learner>(learner: &mut L, shard: &Shard, global: &State, local: &LocalRound, mut on_step: impl FnMut()) -> Result<LocalUpdate> {
    let LocalRound { seed, round, client, local_epochs, batch_size } = *local;
    learner.set_trainable_state(global)?;
    learner.begin_round(round)?;
    learner.begin_local(local.steps(shard))?;
    let mut step_losses = Vec::with_capacity(local.steps(shard));
    for epoch in 0..local_epochs {
        let order = epoch_order(shard.len(), seed, round, client, epoch);
        for rows in order.chunks(batch_size) {
            let ids: Vec<&[u32]> = rows.iter().map(|&i| shard.input_ids[i].as_slice()).collect();
            let labels: Vec<u32> = rows.iter().map(|&i| shard.labels[i]).collect();
            let step = step_losses.len();
            let dropout_seed = seeds::derive(seed, Stream::Dropout, &[round as u64, client as u64, step as u64]);
            let loss = learner.train_step(&ids, &labels, dropout_seed)?;
            if !loss.is_finite() || loss > DIVERGED_LOSS {
                return Err(FederationError::NonFiniteLoss { round, client, step, loss });
            }
            step_losses.push((loss, rows.len()));
            on_step();
            crate::interrupt::check(round, client, step)?;
        }
    }
    Ok(LocalUpdate { state: learner.upload_state()?, step_losses })
}
