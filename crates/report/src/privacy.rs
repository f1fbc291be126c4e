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
    /// Local DP: ε against the server, which sees every upload.
    pub epsilon_against_server: Option<f64>,
    /// How ε was computed, in words.
    pub accountant: String,
}

impl PrivacySummary {
    /// The expected noise norm in the round's mean update over the largest signal one client can
    /// put there, for an upload of `coordinates` values: `σ·√d / m` under central DP (one noise
    /// draw on the sum, divided by m), `σ·√(d/m)` under local DP (m draws averaged).
    pub fn noise_to_signal(&self, coordinates: u64) -> f64 {
        let (d, m) = (coordinates as f64, f64::from(self.clients_per_round.max(1)));
        match self.mode.as_str() {
            "local" => self.noise_multiplier * (d / m).sqrt(),
            _ => self.noise_multiplier * d.sqrt() / m,
        }
    }
}
