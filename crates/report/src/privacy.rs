//! What a report knows of privacy: the DP-FedAvg settings and the accountant's (ε, δ) of a run
//! ([`PrivacySummary`]), and what the audit recovered per method ([`MethodLeakage`]). Plain data:
//! the report's Privacy section renders it (`report`).

use serde::{Deserialize, Serialize};
pub use slora_privacy::{MethodLeakage, SetRecovery};


/// What the accountant says of a run's privacy (`summary.json`'s `privacy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySummary {
    /// `central` (noise on the server's sum) or `local` (noise on every upload).
    pub mode: String,
    /// `C`, the clipping norm of a client's update.
    pub clip_norm: f64,
    /// `σ`: the noise's standard deviation is `σ·C` per coordinate.
    pub noise_multiplier: f64,
    /// The ε the noise was chosen for, if it was.
    pub target_epsilon: Option<f64>,
    /// The δ of (ε, δ).
    pub delta: f64,
    /// Clients sampled per round (`m`).
    pub clients_per_round: u32,
    /// `q = m / clients`.
    pub sampling_rate: f64,
    /// Rounds composed.
    pub rounds: u32,
    /// ε of the released model at `delta`.
    pub epsilon: f64,
    /// The Rényi order that gave `epsilon`.
    pub order: f64,
    /// Local DP: ε against the server, which sees every upload (the same as `epsilon`: the
    /// released model is post-processing of the uploads).
    pub epsilon_against_server: Option<f64>,
    /// ε at `strict_delta`, the usual δ well below 1 / clients.
    #[serde(default)]
    pub epsilon_at_strict_delta: Option<f64>,
    /// See `epsilon_at_strict_delta`.
    #[serde(default)]
    pub strict_delta: Option<f64>,
    /// The noise came from the operating system's entropy (else from the run seed: reproducible,
    /// and private only against whoever does not hold the config).
    #[serde(default)]
    pub secret_noise: bool,
    /// How ε was computed, in words.
    pub accountant: String,
}

impl PrivacySummary {
    /// The expected noise norm in a round's mean update over the most one client can move that
    /// mean (C/m), for an upload of `coordinates` values: `σ·√d` under central DP (one draw of σC on
    /// the sum, divided by m), `σ·√(d·m)` under local DP (m draws averaged).
    pub fn noise_to_signal(&self, coordinates: u64) -> f64 {
        let (d, m) = (coordinates as f64, f64::from(self.clients_per_round.max(1)));
        match self.mode.as_str() {
            "local" => self.noise_multiplier * (d * m).sqrt(),
            _ => self.noise_multiplier * d.sqrt(),
        }
    }
}
