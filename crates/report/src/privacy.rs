//! The report's privacy section: the DP-FedAvg settings, the accountant's (ε, δ), and what the
//! noise does to each method's upload.

use serde::{Deserialize, Serialize};
pub use slora_privacy::{MethodLeakage, SetRecovery};

use crate::report::{Block, CaptionedTable, Section};
use crate::summary::Summary;
use crate::tables::{Align, TextTable};

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

fn eps(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.3}")
    } else {
        "∞".into()
    }
}

/// The section: settings, ε, and per method the noise against the signal.
pub fn privacy_section(p: &PrivacySummary, summary: &Summary) -> Section {
    let mut blocks = vec![Block::Paragraph(format!(
        "Client-level differential privacy (DP-FedAvg, McMahan et al. 2018), {} DP: each client's update (its upload minus \
         its download, every uploaded tensor together) is clipped to L2 norm C = {}, and Gaussian noise of standard \
         deviation σ·C = {} × {} per coordinate is added {}. {}The accountant puts the released model at ε = {} for δ = {} \
         (Rényi order {}){}. {}.",
        p.mode,
        p.clip_norm,
        p.noise_multiplier,
        p.clip_norm,
        if p.mode == "local" {
            "to every upload before it leaves its client; the server's aggregation is unchanged (post-processing)"
        } else {
            "once to the sum of the round's clipped updates, which the server averages with equal weights over the fixed \
             denominator m (the clients sampled per round)"
        },
        match p.target_epsilon {
            Some(t) => format!("σ is the smallest noise multiplier the accountant puts at ε ≤ {t} over the run. "),
            None => String::new(),
        },
        eps(p.epsilon),
        p.delta,
        p.order,
        match p.epsilon_against_server {
            Some(s) => format!(", and against the server itself, which sees each upload of a client's rounds, at ε = {}", eps(s)),
            None => String::new(),
        },
        p.accountant
    ))];
    let mut rows = Vec::new();
    for (method, s) in &summary.methods {
        // f32 uploads: 4 bytes a coordinate.
        let d = s.bytes_up_per_client / 4;
        rows.push(vec![crate::metrics::method_label(method), d.to_string(), format!("{:.3}", p.noise_to_signal(d))]);
    }
    blocks.push(Block::Table(CaptionedTable {
        id: "privacy-noise".into(),
        title: "Noise against signal".into(),
        caption: format!(
            "Per method: the coordinates one client sends in its last round (bytes / 4), and the expected norm of the noise in \
             the round's mean update over the largest signal one client can contribute (C/m under central DP): σ·√d/m \
             under central DP, σ·√(d/m) under local DP, with m = {}. The noise lands only on what a method sends, so a 1 % \
             sparse update carries a tenth of a dense one's noise norm for the same σ, and a LoRA update less still.",
            p.clients_per_round
        ),
        table: TextTable { headers: vec!["Method".into(), "Coordinates sent".into(), "Noise / signal".into()], rows, align: vec![Align::Left, Align::Right, Align::Right] },
    }));
    Section { id: "privacy".into(), heading: "Privacy".into(), blocks }
}
