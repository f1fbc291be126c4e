//! `[privacy]` as a run sees it: the noise multiplier (given, or chosen by the accountant for a
//! target ε), the DP-FedAvg settings every federated stage hands the server, and the (ε, δ) the
//! report prints.
//!
//! The accountant ([`slora_privacy`]) bounds the Rényi DP of the Poisson-subsampled Gaussian
//! mechanism at the sampling rate `q = clients_per_round / clients`, composed over every round of
//! a method's run (`stage1.rounds + stage2.rounds`: SLoRA's two stages are one run of that many
//! rounds at the same σ). The runs sample exactly `clients_per_round` clients without replacement;
//! accounting it as Poisson sampling at the same rate is the usual approximation of DP-FL papers
//! (McMahan et al. 2018 sample by Poisson), and the report says so.

use slora_federation::{ClientDp, NoiseAt};

use crate::config::{BaselineMethod, Config, PartitionScheme, PrivacyMode, StageOneMask};
use crate::error::PipelineError;

/// What the accountant says of a run's privacy (the report's section and `summary.json`).
pub use slora_report::PrivacySummary as PrivacyPlan;

/// The rounds a method's run composes.
fn rounds(cfg: &Config) -> u32 {
    (cfg.stage1.rounds + cfg.stage2.rounds) as u32
}

fn sampling_rate(cfg: &Config) -> f64 {
    cfg.federation.clients_per_round as f64 / cfg.partition.clients as f64
}

/// The δ of the config: `privacy.delta`, or 1 / partition.clients.
fn delta(cfg: &Config) -> f64 {
    match cfg.privacy.delta {
        d if d > 0.0 => d,
        _ => 1.0 / cfg.partition.clients as f64,
    }
}

fn accountant_error(key: &str, e: slora_privacy::PrivacyError) -> PipelineError {
    PipelineError::config(format!("{key}: {e}"))
}

/// The noise multiplier of the config: `privacy.noise_multiplier`, or the accountant's choice for
/// `privacy.target_epsilon`: under central DP for the released model (the sampled Gaussian over
/// every round), under local DP for the guarantee against the server (each upload a Gaussian
/// mechanism of multiplier σ/2, over the most rounds a client takes part in).
pub fn noise_multiplier(cfg: &Config) -> Result<f64, PipelineError> {
    let p = &cfg.privacy;
    if p.target_epsilon <= 0.0 {
        return Ok(p.noise_multiplier);
    }
    let chosen = match p.mode {
        PrivacyMode::Central => slora_privacy::noise_for_epsilon(p.target_epsilon, sampling_rate(cfg), rounds(cfg), delta(cfg)),
        PrivacyMode::Local => slora_privacy::noise_for_epsilon(p.target_epsilon, 1.0, most_participations(cfg), delta(cfg)).map(|half| 2.0 * half),
    };
    chosen.map_err(|e| accountant_error("privacy.target_epsilon", e))
}

/// The δ the report also states ε at: the usual bound, well below 1 / clients.
pub const STRICT_DELTA: f64 = 1e-5;

/// The DP-FedAvg settings every federated run of `cfg` hands its server (`None`: privacy off).
/// Call after [`Config::validate`] (which checks that the noise can be chosen).
pub fn client_dp(cfg: &Config) -> Option<ClientDp> {
    if cfg.privacy.is_off() {
        return None;
    }
    Some(ClientDp {
        clip_norm: cfg.privacy.clip_norm,
        // A target the accountant cannot reach was refused by validation; NaN is refused again by
        // the server's own check, by key.
        noise_multiplier: noise_multiplier(cfg).unwrap_or(f64::NAN),
        noise_at: match cfg.privacy.mode {
            PrivacyMode::Central => NoiseAt::Server,
            PrivacyMode::Local => NoiseAt::Client,
        },
        secret_noise: cfg.privacy.secret_noise,
    })
}

/// The accountant's (ε, δ) for `cfg`'s runs (`None`: privacy off).
pub fn plan(cfg: &Config) -> Result<Option<PrivacyPlan>, PipelineError> {
    let Some(dp) = client_dp(cfg) else { return Ok(None) };
    let sigma = noise_multiplier(cfg)?;
    let (q, t, d) = (sampling_rate(cfg), rounds(cfg), delta(cfg));
    let most = most_participations(cfg);
    let eps = |delta: f64| -> Result<slora_privacy::Epsilon, PipelineError> {
        let mechanism = match dp.noise_at {
            // Add/remove one client: the sampled Gaussian over every round.
            NoiseAt::Server => slora_privacy::SampledGaussian { noise_multiplier: sigma, sampling_rate: q, steps: t },
            // Replace one client's data: its uploads, each a Gaussian of sensitivity 2C, over the
            // rounds it takes part in; the released model is post-processing of them.
            NoiseAt::Client => slora_privacy::SampledGaussian { noise_multiplier: sigma / 2.0, sampling_rate: 1.0, steps: most },
        };
        slora_privacy::epsilon(&[mechanism], delta).map_err(|e| accountant_error("privacy", e))
    };
    let (at_delta, strict) = (eps(d)?, eps(STRICT_DELTA)?);
    let accountant = match dp.noise_at {
        NoiseAt::Server => format!(
            "add/remove one client; Rényi DP of the Poisson-subsampled Gaussian mechanism (Mironov et al. 2019) at q = {}/{} over {t} rounds, converted to (ε, δ) as dp-accounting's RdpAccountant does. The runs sample exactly {} clients a round without replacement, accounted as Poisson sampling at the same rate: the usual approximation of DP-FL papers, not an upper bound in general (Lebeda et al. 2024)",
            cfg.federation.clients_per_round, cfg.partition.clients, cfg.federation.clients_per_round
        ),
        NoiseAt::Client => format!(
            "replace one client's data; each of its uploads is a Gaussian mechanism of sensitivity 2C (multiplier σ/2), composed over the most rounds any client takes part in ({most}), without amplification by sampling (the server knows who took part); the released model is post-processing of the uploads, so the same ε bounds it"
        ),
    };
    Ok(Some(PrivacyPlan {
        mode: cfg.privacy.mode.to_string(),
        clients_per_round: cfg.federation.clients_per_round as u32,
        clip_norm: dp.clip_norm,
        noise_multiplier: sigma,
        target_epsilon: (cfg.privacy.target_epsilon > 0.0).then_some(cfg.privacy.target_epsilon),
        delta: d,
        sampling_rate: q,
        rounds: t,
        epsilon: at_delta.epsilon,
        order: at_delta.order,
        epsilon_against_server: (dp.noise_at == NoiseAt::Client).then_some(at_delta.epsilon),
        epsilon_at_strict_delta: Some(strict.epsilon),
        strict_delta: Some(STRICT_DELTA),
        secret_noise: dp.secret_noise,
        accountant,
    }))
}

/// The most rounds any client is sampled in over a run, across the config's seeds.
fn most_participations(cfg: &Config) -> u32 {
    let seeds = if cfg.run.seeds.is_empty() { vec![cfg.run.seed] } else { cfg.run.seeds.clone() };
    let mut most = 0;
    for seed in seeds {
        let mut counts = vec![0u32; cfg.partition.clients];
        for round in 1..=rounds(cfg) {
            for c in slora_federation::sampling::sample_clients(cfg.partition.clients, cfg.federation.clients_per_round, seed, round) {
                counts[c] += 1;
            }
        }
        most = most.max(counts.into_iter().max().unwrap_or(0));
    }
    most
}

impl Config {
    /// `[privacy]`'s checks: each error names its key.
    pub(crate) fn validate_privacy(&self) -> Result<(), PipelineError> {
        let p = &self.privacy;
        let fail = |key: &str, rule: &str, got: String| Err(PipelineError::config(format!("{key} must be {rule} (got {got})")));
        if !(p.clip_norm >= 0.0 && p.clip_norm.is_finite()) {
            return fail("privacy.clip_norm", "a number >= 0 (0: privacy off)", p.clip_norm.to_string());
        }
        if !(p.noise_multiplier >= 0.0 && p.noise_multiplier.is_finite()) {
            return fail("privacy.noise_multiplier", "a number >= 0", p.noise_multiplier.to_string());
        }
        if !(p.target_epsilon >= 0.0 && p.target_epsilon.is_finite()) {
            return fail("privacy.target_epsilon", "a number >= 0 (0: use privacy.noise_multiplier)", p.target_epsilon.to_string());
        }
        if !(0.0..1.0).contains(&p.delta) {
            return fail("privacy.delta", "in [0, 1) (0: 1 / partition.clients)", p.delta.to_string());
        }
        if p.is_off() {
            if p.noise_multiplier > 0.0 || p.target_epsilon > 0.0 {
                return fail("privacy.clip_norm", "> 0 when privacy.noise_multiplier or privacy.target_epsilon is set (the noise is σ·C)", "0".into());
            }
            return Ok(());
        }
        if p.noise_multiplier > 0.0 && p.target_epsilon > 0.0 {
            return fail("privacy.noise_multiplier", "0 when privacy.target_epsilon is set (the accountant chooses σ)", p.noise_multiplier.to_string());
        }
        if self.partition.scheme == PartitionScheme::Natural {
            return fail("partition.scheme", "one with a known number of clients under [privacy] (the accountant's sampling rate is clients_per_round / clients)", "natural".into());
        }
        if self.stage1.mask != StageOneMask::Random {
            return fail("stage1.mask", "\"random\" under [privacy] (the federated-importance mask round uploads votes that are neither clipped nor noised)", format!("\"{}\"", self.stage1.mask));
        }
        if p.mode == PrivacyMode::Central {
            if let Some(m) = self.baselines.methods.iter().find(|m| matches!(m, BaselineMethod::FedexLora | BaselineMethod::FlexLora)) {
                return fail(
                    "privacy.mode",
                    &format!("\"local\" with {m} in baselines.methods (its server combines each client's factors, whose products the clipping does not bound, so central noise on the sum does not cover it)"),
                    "\"central\"".into(),
                );
            }
            if !self.federation.client_ranks.is_empty() {
                return fail("privacy.mode", "\"local\" with federation.client_ranks (central DP averages updates of one shape)", "\"central\"".into());
            }
            if self.baselines.methods.contains(&BaselineMethod::FedsaLora) {
                return fail(
                    "privacy.mode",
                    "\"local\" with fedsa-lora in baselines.methods (its evaluated model holds the row-weighted mean of the clients' kept B and head, which nobody clips or noises)",
                    "\"central\"".into(),
                );
            }
        }
        noise_multiplier(self)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(sets: &[(&str, &str)]) -> Result<Config, PipelineError> {
        let mut all = vec![crate::config::parse_set("privacy.clip_norm=1.0")?];
        for (k, v) in sets {
            all.push(crate::config::parse_set(&format!("{k}={v}"))?);
        }
        Config::load(None, &all)
    }

    #[test]
    fn each_bad_privacy_setting_is_refused_by_its_key() {
        for (sets, key) in [
            (vec![("privacy.clip_norm", "-1")], "privacy.clip_norm"),
            (vec![("privacy.clip_norm", "0"), ("privacy.noise_multiplier", "1.0")], "privacy.clip_norm"),
            (vec![("privacy.noise_multiplier", "1.0"), ("privacy.target_epsilon", "2.0")], "privacy.noise_multiplier"),
            (vec![("privacy.delta", "1.5")], "privacy.delta"),
            (vec![("baselines.methods", "[\"lora\", \"flexlora\"]")], "privacy.mode"),
            (vec![("baselines.methods", "[\"lora\", \"fedsa-lora\"]")], "privacy.mode"),
            (vec![("stage1.mask", "\"federated-importance\"")], "stage1.mask"),
            (vec![("partition.scheme", "\"natural\""), ("partition.id_column", "\"a\"")], "partition.scheme"),
        ] {
            let e = private(&sets).and_then(|c| c.validate_privacy()).unwrap_err().to_string();
            assert!(e.contains(key), "{sets:?}: {e}");
        }
        // Local DP covers any server step.
        private(&[("privacy.mode", "\"local\""), ("baselines.methods", "[\"flexlora\"]"), ("privacy.noise_multiplier", "1.0")]).unwrap().validate_privacy().unwrap();
    }

    /// Off, the section is out of the serialised config (no key changes); on, σ for a target ε
    /// reproduces that ε, and the plan states it.
    #[test]
    fn a_target_epsilon_chooses_the_noise_and_the_plan_reports_it() -> Result<(), Box<dyn std::error::Error>> {
        let off = Config::load(None, &[])?;
        assert!(serde_json::to_value(&off)?.get("privacy").is_none());
        assert!(plan(&off)?.is_none() && client_dp(&off).is_none());
        let cfg = private(&[("privacy.target_epsilon", "2.0")])?;
        cfg.validate_privacy()?;
        let p = plan(&cfg)?.unwrap();
        assert!((p.epsilon - 2.0).abs() < 1e-3 && p.epsilon <= 2.0 + 1e-9, "{p:?}");
        assert_eq!((p.rounds, p.sampling_rate, p.delta), ((cfg.stage1.rounds + cfg.stage2.rounds) as u32, 0.2, 0.05));
        assert!(p.noise_multiplier > 0.0);
        assert_eq!(client_dp(&cfg).unwrap().noise_multiplier, p.noise_multiplier);
        let local = private(&[("privacy.mode", "\"local\""), ("privacy.noise_multiplier", "2.0")])?;
        let l = plan(&local)?.unwrap();
        assert_eq!(l.epsilon_against_server, Some(l.epsilon), "local DP's guarantee is against the server");
        let central = private(&[("privacy.noise_multiplier", "2.0")])?;
        assert!(l.epsilon > plan(&central)?.unwrap().epsilon, "the server sees every upload: no amplification");
        assert!(p.epsilon_at_strict_delta.unwrap() > p.epsilon, "a smaller δ costs ε");
        // A local target ε is met against the server.
        let target = private(&[("privacy.mode", "\"local\""), ("privacy.target_epsilon", "8.0")])?;
        let t = plan(&target)?.unwrap();
        assert!((t.epsilon - 8.0).abs() < 1e-3 && t.epsilon <= 8.0 + 1e-9, "{t:?}");
        Ok(())
    }
}
