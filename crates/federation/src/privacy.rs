//! Client-level differential privacy, DP-FedAvg (McMahan et al., ICLR 2018): each client's update
//! (its upload minus its download, every uploaded tensor together) is clipped to L2 norm `C`, and
//! Gaussian noise of standard deviation `σ·C` per coordinate is added either once to the round's
//! sum at the server ([`NoiseAt::Server`], central DP) or to every upload at its client
//! ([`NoiseAt::Client`], local DP).
//!
//! Under central DP the server averages the clipped updates with equal weights over a fixed
//! denominator, the number of clients sampled per round (McMahan et al.'s fixed-denominator
//! estimator): a sample-weighted mean would let one client's row count scale its influence, which
//! the clipping bound does not cover. A lost client still counts in the denominator. Under local
//! DP every upload is already private, so the server's aggregation (sample-weighted, FedEx-LoRA's
//! residual, FlexLoRA's SVD) is post-processing and stays as it is.
//!
//! A sparse (1 %) or LoRA upload is clipped and noised over what it sends: the noise lands only on
//! the coordinates it sends, so for the same `C` and `σ` its noise norm is `σ·C·√d` over `d` sent
//! coordinates against the dense model's `√D` ([`noise_to_signal`]).

use candle_core::{DType, Device, Tensor};
use rand_distr::{Distribution, StandardNormal};

use crate::aggregate::State;
use crate::error::{FederationError, Result};
use crate::seeds::{self, Stream};

/// Where DP-FedAvg's noise is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseAt {
    /// Once, to the sum of the round's clipped updates (central DP: the server is trusted with
    /// individual clipped updates, the released model is private).
    Server,
    /// To every clipped update before it leaves its client (local DP: private against the server).
    Client,
}

/// DP-FedAvg's settings for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientDp {
    /// `C`: every client's update is clipped to this L2 norm (> 0).
    pub clip_norm: f64,
    /// `σ`: the noise's standard deviation is `σ·C` per coordinate (≥ 0; 0: clipping only).
    pub noise_multiplier: f64,
    /// Where the noise is added.
    pub noise_at: NoiseAt,
    /// Draw the noise from the operating system's entropy instead of the run seed. A deployment
    /// must: anyone who knows a seeded run's config can regenerate its noise and subtract it, so
    /// the guarantee holds only while the randomness is secret. A simulation draws it from the run
    /// seed (and σ and the mode), so that it is reproducible and resumes to the same bits.
    pub secret_noise: bool,
}

impl ClientDp {
    /// The noise's standard deviation per coordinate, `σ·C`.
    pub fn noise_std(&self) -> f64 {
        self.noise_multiplier * self.clip_norm
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |key, message: String| Err(FederationError::InvalidConfig { key, message });
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return bad("privacy.clip_norm", format!("must be a finite number > 0 (got {})", self.clip_norm));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return bad("privacy.noise_multiplier", format!("must be a finite number >= 0 (got {})", self.noise_multiplier));
        }
        Ok(())
    }
}

/// `upload − download`, tensor by tensor in f32, over the upload's names.
pub fn delta(upload: &State, download: &State) -> Result<State> {
    upload
        .iter()
        .map(|(name, t)| {
            let base = download.get(name).ok_or_else(|| FederationError::StateMismatch(format!("the update has an unknown tensor `{name}`")))?;
            Ok((name.clone(), (t.to_dtype(DType::F32)? - base.to_dtype(DType::F32)?)?))
        })
        .collect()
}

/// The L2 norm of every tensor of `state` together, summed in f64 (an f32 sum over millions of
/// squares drifts by about 1e-4 relative, enough to leave a clipped update above C).
pub fn l2_norm(state: &State) -> Result<f64> {
    let mut sum = 0f64;
    for t in state.values() {
        sum += t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(sum.sqrt())
}

/// `delta` scaled by `min(1, C / ‖delta‖)`, and its norm before clipping.
pub fn clip(delta: State, clip_norm: f64) -> Result<(State, f64)> {
    let norm = l2_norm(&delta)?;
    if norm <= clip_norm {
        return Ok((delta, norm));
    }
    let scale = clip_norm / norm;
    let clipped = delta.into_iter().map(|(n, t)| Ok((n, t.affine(scale, 0.0)?))).collect::<Result<State>>()?;
    Ok((clipped, norm))
}

/// Gaussian noise of standard deviation `std` shaped like every tensor of `like`, in f32, drawn in
/// name order from one seeded stream: the same seed gives the same noise on any machine.
pub fn gaussian_noise(like: &State, std: f64, seed: u64) -> Result<State> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    let std = std as f32;
    like.iter()
        .map(|(name, t)| {
            let values: Vec<f32> = (0..t.elem_count()).map(|_| std * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng)).collect();
            Ok((name.clone(), Tensor::from_vec(values, t.dims(), &Device::Cpu)?))
        })
        .collect()
}

/// The noise seed of client `client`'s upload in `round` (local DP), or of the round's sum
/// (`client = None`, central DP). Seeded runs mix σ and the mode in, so that two runs of one seed
/// at different ε do not share a noise vector (their difference would cancel it); a secret-noise
/// run draws from the operating system's entropy.
pub fn noise_seed(dp: &ClientDp, run_seed: u64, round: u32, client: Option<usize>) -> u64 {
    if dp.secret_noise {
        return rand::random();
    }
    let mode = match dp.noise_at {
        NoiseAt::Server => 1,
        NoiseAt::Client => 2,
    };
    let who = client.map_or(0, |c| c as u64 + 1);
    seeds::derive(run_seed, Stream::PrivacyNoise, &[u64::from(round), who, dp.noise_multiplier.to_bits(), mode])
}

/// `base + delta` per tensor, in `base`'s dtype.
pub fn apply(base: &State, delta: &State) -> Result<State> {
    delta
        .iter()
        .map(|(name, d)| {
            let b = base.get(name).ok_or_else(|| FederationError::StateMismatch(format!("no base tensor `{name}`")))?;
            Ok((name.clone(), (b.to_dtype(DType::F32)? + d)?.to_dtype(b.dtype())?))
        })
        .collect()
}

/// What client `client` sends in `round` under `dp`: its update clipped to `C` (and under local DP
/// noised), added back to what it downloaded. Under central DP the server clips again (a client
/// cannot opt out by sending an unclipped update).
pub fn privatize_upload(upload: &State, download: &State, dp: &ClientDp, run_seed: u64, round: u32, client: usize) -> Result<State> {
    let (clipped, _) = clip(delta(upload, download)?, dp.clip_norm)?;
    let sent = match dp.noise_at {
        NoiseAt::Client if dp.noise_multiplier > 0.0 => {
            let noise = gaussian_noise(&clipped, dp.noise_std(), noise_seed(dp, run_seed, round, Some(client)))?;
            add(&clipped, &noise)?
        }
        _ => clipped,
    };
    apply(download, &sent)
}

/// `a + b` per tensor (same names and shapes).
fn add(a: &State, b: &State) -> Result<State> {
    a.iter().map(|(n, t)| Ok((n.clone(), (t + &b[n])?))).collect()
}

/// The central-DP sum of one round: the clipped updates added with equal weights, noised once and
/// divided by the fixed denominator when the round closes.
#[derive(Debug, Default)]
pub struct ClippedSum {
    sum: State,
    clients: usize,
    clipped: usize,
}

impl ClippedSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one client's update (`upload − download`, not yet clipped) clipped to `clip_norm`.
    pub fn add(&mut self, delta: State, clip_norm: f64) -> Result<()> {
        let (clipped, norm) = clip(delta, clip_norm)?;
        self.clipped += usize::from(norm > clip_norm);
        if self.clients == 0 {
            self.sum = clipped;
        } else {
            self.sum = add(&self.sum, &clipped)?;
        }
        self.clients += 1;
        Ok(())
    }

    /// Updates added so far.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Of those, how many were above the clipping norm.
    pub fn clipped(&self) -> usize {
        self.clipped
    }

    /// `(Σ clipped + N(0, (σC)²)) / denominator`: the round's private mean update.
    pub fn finish(self, dp: &ClientDp, denominator: usize, seed: u64) -> Result<State> {
        if self.clients == 0 {
            return Err(FederationError::StateMismatch("no client update to average".into()));
        }
        let noisy = match dp.noise_multiplier > 0.0 {
            true => add(&self.sum, &gaussian_noise(&self.sum, dp.noise_std(), seed)?)?,
            false => self.sum,
        };
        let inv = 1.0 / denominator as f64;
        noisy.into_iter().map(|(n, t)| Ok((n, t.affine(inv, 0.0)?))).collect()
    }
}

/// The expected noise norm in a round's mean update over the most one client can move that mean
/// (C/m, with `m` clients per round): `σ·√d` for `d` sent coordinates under central DP (one draw of
/// σC per coordinate on the sum, divided by m), `σ·√(d·m)` under local DP (m draws averaged). A 1 %
/// sparse matrix sends a hundredth of the coordinates, so the same σ buries it under a tenth of
/// the dense matrix's noise.
pub fn noise_to_signal(dp: &ClientDp, sent_coordinates: u64, clients_per_round: usize) -> f64 {
    let d = sent_coordinates as f64;
    let m = clients_per_round as f64;
    match dp.noise_at {
        NoiseAt::Server => dp.noise_multiplier * d.sqrt(),
        NoiseAt::Client => dp.noise_multiplier * (d * m).sqrt(),
    }
}

/// The global rounds whose uploads are recorded for the audit: `count` of a method's `rounds`
/// (1 ..= rounds; all when `count >= rounds`), drawn from the run seed alone, so that every method
/// of a seed records the same rounds (the same sampled clients: comparable upload by upload), and
/// SLoRA's two stages the parts of them that fall in each.
pub fn recorded_rounds(run_seed: u64, rounds: u32, count: u32) -> std::collections::BTreeSet<u32> {
    let mut rng = seeds::rng(run_seed, Stream::UploadRecord, &[0]);
    let take = count.min(rounds) as usize;
    rand::seq::index::sample(&mut rng, rounds as usize, take).into_iter().map(|i| 1 + i as u32).collect()
}

/// The folder of round `round`'s records under a run's `uploads/`.
pub fn recorded_round_dir(uploads: &std::path::Path, round: u32) -> std::path::PathBuf {
    uploads.join(format!("round-{round:05}"))
}

/// The file of what the server sent in a recorded round.
pub const RECORDED_DOWNLOAD: &str = "download.safetensors";

/// The file of what client `client` sent in a recorded round, as the server's view of its update
/// (upload − download, f32: a coordinate the client did not change is exactly 0).
pub fn recorded_upload_file(client: usize) -> String {
    format!("client-{client:05}.safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(values: &[(&str, Vec<f32>)]) -> State {
        values.iter().map(|(n, v)| (n.to_string(), Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap())).collect()
    }

    fn values(s: &State, name: &str) -> Vec<f32> {
        s[name].to_vec1::<f32>().unwrap()
    }

    /// Every clipped update has norm ≤ C (to f32 rounding); one already inside is untouched, bit
    /// for bit; the direction is kept.
    #[test]
    fn clipping_bounds_every_update_and_keeps_its_direction() -> anyhow::Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for trial in 0..50 {
            let scale = 10f32.powi(rng.random_range(-3..4));
            let a: Vec<f32> = (0..37).map(|_| scale * (rng.random::<f32>() - 0.5)).collect();
            let b: Vec<f32> = (0..5).map(|_| scale * (rng.random::<f32>() - 0.5)).collect();
            let d = state(&[("a", a.clone()), ("b", b.clone())]);
            let before = l2_norm(&d)?;
            let c = 0.7;
            let (clipped, norm) = clip(d, c)?;
            assert!((norm - before).abs() <= 1e-12 * before.max(1.0));
            let after = l2_norm(&clipped)?;
            assert!(after <= c * (1.0 + 1e-6), "trial {trial}: {after} > {c}");
            if before <= c {
                assert_eq!(values(&clipped, "a"), a, "inside the ball: unchanged");
            } else {
                assert!((after - c).abs() < 1e-6 * c, "on the sphere: {after}");
                let ratio = values(&clipped, "a")[0] / a[0];
                for (x, y) in values(&clipped, "a").iter().zip(&a) {
                    assert!((x / y - ratio).abs() < 1e-5, "one scale for every coordinate");
                }
            }
        }
        Ok(())
    }

    /// The noise's empirical standard deviation is σ·C (within 1 % on 200,000 draws: the
    /// standard error of a sample std is std/√(2n) ≈ 0.16 %), its mean 0, and it is the same for
    /// the same seed.
    #[test]
    fn the_noise_has_standard_deviation_sigma_times_c() -> anyhow::Result<()> {
        let like = state(&[("w", vec![0.0; 150_000]), ("b", vec![0.0; 50_000])]);
        let dp = ClientDp { clip_norm: 0.5, noise_multiplier: 1.3, noise_at: NoiseAt::Server, secret_noise: false };
        let noise = gaussian_noise(&like, dp.noise_std(), 9)?;
        let all: Vec<f64> = noise.values().flat_map(|t| t.to_vec1::<f32>().unwrap()).map(f64::from).collect();
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let std = (all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!(mean.abs() < 4.0 * dp.noise_std() / n.sqrt(), "mean {mean}");
        assert!((std / dp.noise_std() - 1.0).abs() < 0.01, "std {std} vs σ·C = {}", dp.noise_std());
        assert_eq!(values(&gaussian_noise(&like, 0.65, 9)?, "b"), values(&noise, "b"));
        assert_ne!(values(&gaussian_noise(&like, 0.65, 10)?, "b"), values(&noise, "b"));
        Ok(())
    }

    /// Central DP: the round's mean is (Σ clipped + noise) / m, with m the fixed denominator;
    /// without noise it is exactly the clipped mean over m.
    #[test]
    fn the_central_sum_clips_each_update_and_divides_by_the_fixed_denominator() -> anyhow::Result<()> {
        let dp = ClientDp { clip_norm: 1.0, noise_multiplier: 0.0, noise_at: NoiseAt::Server, secret_noise: false };
        let mut sum = ClippedSum::new();
        sum.add(state(&[("w", vec![3.0, 4.0])]), dp.clip_norm)?; // norm 5 → [0.6, 0.8]
        sum.add(state(&[("w", vec![0.1, 0.0])]), dp.clip_norm)?; // inside
        assert_eq!((sum.clients(), sum.clipped()), (2, 1));
        let mean = sum.finish(&dp, 4, 0)?;
        let w = values(&mean, "w");
        assert!((w[0] - 0.7 / 4.0).abs() < 1e-7 && (w[1] - 0.8 / 4.0).abs() < 1e-7, "{w:?}");
        Ok(())
    }

    /// Local DP: the upload is download + clipped update + noise of σ·C; under central DP the
    /// client only clips.
    #[test]
    fn a_local_dp_upload_is_clipped_and_noised_around_its_download() -> anyhow::Result<()> {
        let download = state(&[("w", vec![1.0; 4000])]);
        let upload = state(&[("w", vec![3.0; 4000])]); // update norm 2·√4000
        let local = ClientDp { clip_norm: 0.5, noise_multiplier: 0.0, noise_at: NoiseAt::Client, secret_noise: false };
        let sent = privatize_upload(&upload, &download, &local, 1, 2, 3)?;
        assert!((l2_norm(&delta(&sent, &download)?)? - 0.5).abs() < 1e-5);
        let noisy = ClientDp { noise_multiplier: 2.0, ..local };
        let sent = privatize_upload(&upload, &download, &noisy, 1, 2, 3)?;
        let d = delta(&sent, &download)?;
        // The clipped signal is 0.5/√4000 per coordinate; the noise's std is 1.0 per coordinate.
        let v = values(&d, "w");
        let std = (v.iter().map(|x| (f64::from(*x) - 0.5 / 4000f64.sqrt()).powi(2)).sum::<f64>() / 4000.0).sqrt();
        assert!((std - 1.0).abs() < 0.05, "{std}");
        assert_eq!(values(&privatize_upload(&upload, &download, &noisy, 1, 2, 3)?, "w"), values(&sent, "w"), "seeded");
        assert_ne!(values(&privatize_upload(&upload, &download, &noisy, 1, 2, 4)?, "w"), values(&sent, "w"), "per client");
        Ok(())
    }

    #[test]
    fn sparse_uploads_carry_less_noise_for_the_same_sigma() {
        let dp = ClientDp { clip_norm: 1.0, noise_multiplier: 1.0, noise_at: NoiseAt::Server, secret_noise: false };
        let dense = noise_to_signal(&dp, 1_000_000, 4);
        let sparse = noise_to_signal(&dp, 10_000, 4);
        assert!((dense / sparse - 10.0).abs() < 1e-9);
        assert!((dense - 1000.0).abs() < 1e-9);
        let local = ClientDp { noise_at: NoiseAt::Client, ..dp };
        assert!((noise_to_signal(&local, 1_000_000, 4) - 2000.0).abs() < 1e-9);
    }

    /// A toy run under central DP without noise: every round moves the global state by the mean
    /// of the clipped updates over the fixed denominator, so by at most C; with a C above every
    /// update and one client per round it is plain FedAvg's round. With noise, the run differs,
    /// is seeded, and a mode that cannot be private is refused by its key.
    #[test]
    fn a_central_dp_run_moves_each_round_by_at_most_the_clip_norm() -> anyhow::Result<()> {
        use crate::engine::run_fedavg;
        use crate::toy::{toy_config, toy_data, toy_vocab, ToyLearner};
        let (clients, test) = toy_data(6, 4, 30);
        let mut cfg = toy_config(3);
        cfg.privacy = Some(ClientDp { clip_norm: 0.05, noise_multiplier: 0.0, noise_at: NoiseAt::Server, secret_noise: false });
        let mut learner = ToyLearner::new(toy_vocab(4), 4, 20.0);
        let mut states = vec![crate::learner::Learner::trainable_state(&learner)?];
        for rounds in 1..=3 {
            let mut c = cfg.clone();
            c.rounds = rounds;
            let mut l = ToyLearner::new(toy_vocab(4), 4, 20.0);
            states.push(run_fedavg(&mut l, &clients, &test, None, &c, None)?.state);
        }
        for w in states.windows(2) {
            let moved = l2_norm(&delta(&w[1], &w[0])?)?;
            assert!(moved <= 0.05 * (1.0 + 1e-5) && moved > 0.0, "moved {moved}");
        }
        // One client a round and a C no update reaches: FedAvg's round exactly (to f32 rounding).
        cfg.clients_per_round = 1;
        cfg.rounds = 2;
        cfg.privacy = Some(ClientDp { clip_norm: 1e9, noise_multiplier: 0.0, noise_at: NoiseAt::Server, secret_noise: false });
        let private = run_fedavg(&mut learner, &clients, &test, None, &cfg, None)?;
        let mut plain_cfg = cfg.clone();
        plain_cfg.privacy = None;
        let plain = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &plain_cfg, None)?;
        assert!(l2_norm(&delta(&private.state, &plain.state)?)? < 1e-5 * l2_norm(&plain.state)?);
        // Noise: seeded, and it changes the run.
        cfg.privacy = Some(ClientDp { clip_norm: 0.05, noise_multiplier: 1.0, noise_at: NoiseAt::Server, secret_noise: false });
        let a = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None)?;
        let b = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None)?;
        assert_eq!(l2_norm(&delta(&a.state, &b.state)?)?, 0.0);
        assert!(l2_norm(&delta(&a.state, &private.state)?)? > 0.0);
        cfg.aggregation = crate::config::Aggregation::FlexLora { scale: 2.0 };
        let e = run_fedavg(&mut ToyLearner::new(toy_vocab(4), 4, 20.0), &clients, &test, None, &cfg, None).unwrap_err().to_string();
        assert!(e.contains("privacy.mode"), "{e}");
        Ok(())
    }
}
