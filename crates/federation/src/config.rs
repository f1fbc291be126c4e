//! The settings of a federated run ([`FedAvgConfig`]) and how its server aggregates ([`Aggregation`]).

use crate::error::{FederationError, Result};
use crate::learner::Shard;
use slora_metrics::RoundMetrics;

/// A mean batch cross-entropy above this is divergence, not learning: it needs logit margins of ~10⁴
/// (a uniform guess costs ln(num_labels) < 12). An lr far too high (1e6) gives losses of ~10⁷ that
/// stay finite for many steps before turning NaN; stopping here keeps the last good checkpoint.
pub const DIVERGED_LOSS: f64 = 1e4;

/// Settings of one federated run.
#[derive(Debug, Clone, PartialEq)]
pub struct FedAvgConfig {
    /// Value of the metrics `method` column.
    pub method: String,
    /// Rounds to run (≥ 1).
    pub rounds: u32,
    /// Global number of this run's round 0 (stage 2 continues after stage 1's rounds).
    pub round_offset: u32,
    /// Clients sampled per round (1 ..= number of clients).
    pub clients_per_round: usize,
    /// Local epochs over a client's shard per round (≥ 1).
    pub local_epochs: u32,
    /// Training batch size (≥ 1).
    pub batch_size: usize,
    /// Evaluate every this many rounds (≥ 1); the last round is always evaluated.
    pub eval_every: u32,
    /// Batch size for evaluation (≥ 1).
    pub eval_batch_size: usize,
    /// Run seed: client sampling, shuffling and dropout derive from it (see [`crate::seeds`]).
    pub seed: u64,
    /// Upload bytes already spent before this run (stage 2 continues stage 1's count).
    pub cum_bytes_up_start: u64,
    /// Wall seconds already spent before this run (stage 2 continues stage 1's clock).
    pub wall_seconds_start: f64,
    /// Download bytes already spent before this run (over all clients).
    pub cum_bytes_down_start: u64,
    /// A one-off payload each of the `total clients` must download before it trains in this run
    /// (SLoRA's switch): charged in the first round's `bytes_down_per_client` and, for every client,
    /// in `cum_bytes_down`.
    pub switch_bytes_per_client: u64,
    /// Server seconds spent before round 1 (SLoRA's decomposition), recorded in the round-0 row.
    pub setup_server_seconds: f64,
    /// What was spent before round 1 on the clients' side (the federated Stage-1 mask round):
    /// charged in the round-0 row and its running totals.
    pub setup: SetupCosts,
    /// Measure the last round on `full_test` too (when given). Off for a run whose end is not a
    /// result anyone ranks (SLoRA's Stage 1: Stage 2 goes on from it), which saves a full pass.
    pub final_full_test: bool,
    /// Measure the last this many rounds on `full_test` (≥ 1; 1 = the last only), so a result can
    /// be the mean of the last rounds, each on every test row.
    pub full_test_last_k: u32,
    /// How the server combines the replies of a round.
    pub aggregation: Aggregation,
    /// Each client's LoRA rank, cycled over clients ([`crate::ranks`]); empty: every client
    /// trains the global state's rank.
    pub client_ranks: Vec<usize>,
    /// Refuse a reply whose update lies farther than this (L2) from its download (`None`: off).
    pub max_update_norm: Option<f64>,
    /// Client-level differential privacy (DP-FedAvg, [`crate::privacy`]); `None`: off.
    pub privacy: Option<crate::privacy::ClientDp>,
    /// The global rounds whose replies the server records ([`crate::privacy::recorded_rounds`]),
    /// in the checkpoint folder's `uploads/` (empty: none; a run without checkpoints records nothing).
    pub record_rounds: std::collections::BTreeSet<u32>,
}

/// How the server combines a round's replies into the next global state.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Aggregation {
    /// FedAvg: the sample-weighted mean of every uploaded tensor.
    #[default]
    Mean,
    /// FedEx-LoRA ([`crate::exact`]): FedAvg of the factors, plus the residual
    /// `scale·(mean(B·A) − mean(B)·mean(A))` folded into each adapted matrix's base offset.
    ExactLora {
        /// LoRA's `lora_alpha / r`.
        scale: f64,
    },
    /// FlexLoRA ([`crate::exact`]): the weighted average of the clients' products `Bᵢ·Aᵢ`,
    /// re-factored by a truncated SVD to the factors' rank (the head by FedAvg).
    FlexLora {
        /// LoRA's `lora_alpha / r`.
        scale: f64,
    },
    /// LoRA-A² ([`crate::alternating`]): each round's replies carry one factor (the other is
    /// frozen that round), averaged into the global state, which keeps the frozen one; an upload
    /// is charged by the rank components it changed.
    Alternating,
    /// FedSA-LoRA (Guo et al., ICLR 2025; [`crate::server`]): only A is uploaded and averaged; B
    /// and the head stay on each client, which starts every round from its own. The global state
    /// the server evaluates is the mean A with the sample-weighted mean of the clients' B and head
    /// (a number for comparison only: nobody sends them).
    SharedA,
}

/// Client-side costs of a setup round before round 1 (the federated mask round): `clients` clients
/// upload `bytes_up_per_client` each, every client downloads `bytes_down_per_client`, and the
/// uploading clients spend `train_seconds` in total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SetupCosts {
    /// Clients that uploaded.
    pub clients: u32,
    /// Upload of one of them.
    pub bytes_up_per_client: u64,
    /// Download of every client (a one-off payload like SLoRA's switch).
    pub bytes_down_per_client: u64,
    /// Client seconds, summed.
    pub train_seconds: f64,
}

/// The accounting carry-over of a run that continues another (SLoRA's Stage 2 after Stage 1).
impl FedAvgConfig {
    /// Continues `last`'s round numbering, upload / download totals and clock.
    pub fn continue_after(mut self, last: &RoundMetrics) -> Self {
        self.round_offset = last.round;
        self.cum_bytes_up_start = last.cum_bytes_up;
        self.cum_bytes_down_start = last.cum_bytes_down;
        self.wall_seconds_start = last.wall_seconds;
        self
    }
}

impl FedAvgConfig {
    pub(crate) fn validate(&self, num_clients: usize, test: &Shard) -> Result<()> {
        let bad = |key, message: String| Err(FederationError::InvalidConfig { key, message });
        if self.rounds == 0 {
            return bad("rounds", "must be >= 1 (got 0)".into());
        }
        if self.clients_per_round == 0 || self.clients_per_round > num_clients {
            return bad(
                "federation.clients_per_round",
                format!("must be in 1..={num_clients} (the number of clients), got {}", self.clients_per_round),
            );
        }
        if self.local_epochs == 0 {
            return bad("federation.local_epochs", "must be >= 1 (got 0)".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("federation.batch_size", "must be >= 1 (got 0)".into());
        }
        if self.eval_every == 0 {
            return bad("federation.eval_every", "must be >= 1 (got 0)".into());
        }
        if self.client_ranks.contains(&0) {
            return bad("federation.client_ranks", format!("every rank must be >= 1 (got {:?})", self.client_ranks));
        }
        if !self.client_ranks.is_empty() && matches!(self.aggregation, Aggregation::Alternating | Aggregation::SharedA) {
            return bad("federation.client_ranks", "LoRA-A² and FedSA-LoRA train one global rank (set no client_ranks)".into());
        }
        if let Some(dp) = &self.privacy {
            dp.validate()?;
            if dp.noise_at == crate::privacy::NoiseAt::Server {
                if matches!(self.aggregation, Aggregation::ExactLora { .. } | Aggregation::FlexLora { .. }) {
                    return bad(
                        "privacy.mode",
                        "\"central\" adds noise to the sum of the clipped updates, but FedEx-LoRA's residual and FlexLoRA's SVD use each client's factors, whose products the clipping does not bound; use \"local\"".into(),
                    );
                }
                if !self.client_ranks.is_empty() {
                    return bad("privacy.mode", "\"central\" averages updates of one shape; heterogeneous federation.client_ranks need \"local\"".into());
                }
                if self.aggregation == Aggregation::SharedA {
                    return bad(
                        "privacy.mode",
                        "\"central\" noises what clients upload, but FedSA-LoRA's evaluated model also holds the row-weighted mean of every client's kept B and head, which nobody clips or noises; use \"local\"".into(),
                    );
                }
            }
        }
        if test.is_empty() {
            return Err(FederationError::EmptyTest);
        }
        Ok(())
    }
}
