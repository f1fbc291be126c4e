//! FedEx-LoRA (Singhal et al., 2024): exact aggregation of LoRA updates.
//!
//! FedAvg of the factors gives `mean(B)·mean(A)`, which is not the average of the clients' updates
//! `mean(B·A)`: the global model is then none of the clients' models averaged, and the error grows as
//! the clients' factors drift apart. FedEx-LoRA averages A and B as FedAvg does and folds the
//! residual `scale·(mean(Bᵢ·Aᵢ) − mean(B)·mean(A))` into the frozen base of every adapted matrix,
//! so the global function is the sample-weighted average of the clients' functions (to f32 rounding).
//!
//! FlexLoRA (Bai et al., 2024) shares the first half: the server forms the same weighted average of
//! the clients' full-size products `mean(Bᵢ·Aᵢ)`, then takes its SVD and sends the top-r factors
//! (B = U·S / scale, A = Vᵀ, the paper's split): the best rank-r approximation of the average, with no
//! residual kept ([`ProductSum::finish_svd`]).
//!
//! The residual accumulates over rounds into `<module>.base_offset`, a dense `[out, in]` tensor in
//! the global state that the server sends with the factors (it is never uploaded). A client added to
//! the round in any later round needs the whole offset, since it may never have seen an earlier
//! round: the download is charged densely, as the tensor it is.

use candle_core::DType;

use crate::aggregate::{State, WeightedAverage};
use crate::error::{FederationError, Result};

/// Suffix of a global-state tensor that the server sends but no client trains or uploads: the
/// residual folded into the frozen base weight of `<module>`.
pub const BASE_OFFSET_SUFFIX: &str = ".base_offset";

use crate::alternating::{LORA_A, LORA_B};

/// Whether `name` is a base offset (server-sent, never uploaded).
pub fn is_base_offset(name: &str) -> bool {
    name.ends_with(BASE_OFFSET_SUFFIX)
}

/// `scale·Bᵢ·Aᵢ`'s unscaled product `Bᵢ·Aᵢ` (`[out, in]`) per adapted module of one client's upload.
pub fn lora_products(update: &State) -> Result<State> {
    let mut out = State::new();
    for (name, a) in update {
        let Some(module) = name.strip_suffix(LORA_A) else { continue };
        let b = update
            .get(&format!("{module}{LORA_B}"))
            .ok_or_else(|| FederationError::StateMismatch(format!("`{name}` has no `{module}{LORA_B}` beside it")))?;
        out.insert(module.to_string(), b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)?);
    }
    if out.is_empty() {
        return Err(FederationError::StateMismatch("exact LoRA aggregation needs LoRA factors (no `*.lora_A.weight` in the update)".into()));
    }
    Ok(out)
}

/// The running `Σ nᵢ·Bᵢ·Aᵢ` of one round, beside the FedAvg sum of the factors.
#[derive(Debug, Default)]
pub struct ProductSum {
    sum: WeightedAverage,
}

impl ProductSum {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one client's factors with weight `samples`.
    pub fn add(&mut self, update: &State, samples: u64) -> Result<()> {
        self.sum.add(&lora_products(update)?, samples)
    }

    /// The new global state: `mean` (the FedAvg of the factors and the head) plus, per adapted
    /// module, the base offset of `previous` (none before the first residual) grown by
    /// `scale·(mean(Bᵢ·Aᵢ) − mean(B)·mean(A))`.
    pub fn finish(self, mut mean: State, previous: &State, scale: f64) -> Result<State> {
        for (module, product_mean) in self.sum.finish()? {
            let a = &mean[&format!("{module}{LORA_A}")];
            let b = &mean[&format!("{module}{LORA_B}")];
            let residual = ((product_mean - b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)?)? * scale)?;
            let name = format!("{module}{BASE_OFFSET_SUFFIX}");
            let offset = match previous.get(&name) {
                Some(before) => (before + residual)?,
                None => residual,
            };
            mean.insert(name, offset);
        }
        Ok(mean)
    }
}

impl ProductSum {
    /// FlexLoRA's new global state: `mean` (the FedAvg of the head) with each module's factors
    /// replaced by the rank-r truncated SVD of `scale·mean(Bᵢ·Aᵢ)` (r = the factors' rank), split
    /// as B = U·S / scale, A = Vᵀ; also each module's kept energy `Σ_{i<r} σᵢ² / Σ σᵢ²`.
    pub fn finish_svd(self, mut mean: State, scale: f64) -> Result<(State, Vec<(String, f64)>)> {
        let mut energy = Vec::new();
        for (module, product_mean) in self.sum.finish()? {
            let (a_name, b_name) = (format!("{module}{LORA_A}"), format!("{module}{LORA_B}"));
            let rank = mean[&a_name].dims()[0];
            let (rows, cols) = product_mean.dims2()?;
            let delta: Vec<f32> = (product_mean * scale)?.flatten_all()?.to_vec1::<f32>()?;
            let init = slora_model::svd_init::lora_from_delta(&delta, rows, cols, rank, scale, slora_model::svd_init::InitMode::SvdB)
                .map_err(|e| FederationError::StateMismatch(format!("{module}: {e}")))?;
            let device = candle_core::Device::Cpu;
            mean.insert(a_name, candle_core::Tensor::from_vec(init.a, (rank, cols), &device)?);
            mean.insert(b_name, candle_core::Tensor::from_vec(init.b, (rows, rank), &device)?);
            energy.push((module, init.energy_kept));
        }
        Ok((mean, energy))
    }
}

/// The base offsets of a state.
#[cfg(test)]
fn offsets(state: &State) -> Vec<(&String, &candle_core::Tensor)> {
    state.iter().filter(|(n, _)| is_base_offset(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn factors(a: &[f32], b: &[f32]) -> State {
        // One module, r = 2, in = 3, out = 2; a head bias beside it.
        let dev = Device::Cpu;
        let mut s = State::new();
        s.insert(format!("m{LORA_A}"), Tensor::from_slice(a, (2, 3), &dev).unwrap());
        s.insert(format!("m{LORA_B}"), Tensor::from_slice(b, (2, 2), &dev).unwrap());
        s.insert("classifier.bias".into(), Tensor::from_slice(&[a[0], b[0]], 2, &dev).unwrap());
        s
    }

    fn mat(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    /// The update the global state applies, `scale·B̄Ā + offset`, is the weighted mean of the
    /// clients' `scale·BᵢAᵢ` (plus the offset they started from); FedAvg's `B̄Ā` alone is not.
    #[test]
    fn the_global_update_is_the_weighted_mean_of_the_clients_updates() -> anyhow::Result<()> {
        let scale = 2.0;
        let clients = [
            (factors(&[1.0, 0.0, 2.0, 0.0, 1.0, -1.0], &[1.0, 0.0, 0.5, 2.0]), 10u64),
            (factors(&[0.0, 3.0, 1.0, 1.0, 0.0, 0.0], &[-1.0, 1.0, 0.0, 1.0]), 30),
            (factors(&[2.0, 1.0, 0.0, -1.0, 2.0, 1.0], &[0.0, 2.0, 1.0, 0.0]), 60),
        ];
        let start = {
            let mut s = State::new();
            s.insert(format!("m{BASE_OFFSET_SUFFIX}"), Tensor::full(0.25f32, (2, 3), &Device::Cpu)?);
            s
        };
        let (mut avg, mut products) = (WeightedAverage::new(), ProductSum::new());
        for (s, n) in &clients {
            avg.add(s, *n)?;
            products.add(s, *n)?;
        }
        let mean = avg.finish()?;
        let global = products.finish(mean.clone(), &start, scale)?;
        assert_eq!(offsets(&global).len(), 1);
        let applied = ((global[&format!("m{LORA_B}")].matmul(&global[&format!("m{LORA_A}")])? * scale)? + &global[&format!("m{BASE_OFFSET_SUFFIX}")])?;
        // Σ nᵢ·(0.25 + scale·BᵢAᵢ) / Σ nᵢ, computed directly in f64.
        let mut want = [[0f64; 3]; 2];
        for (s, n) in &clients {
            let p = mat(&s[&format!("m{LORA_B}")].matmul(&s[&format!("m{LORA_A}")])?);
            for (i, row) in want.iter_mut().enumerate() {
                for (j, w) in row.iter_mut().enumerate() {
                    *w += *n as f64 * (0.25 + scale * p[i][j] as f64) / 100.0;
                }
            }
        }
        for (got, want) in mat(&applied).iter().flatten().zip(want.iter().flatten()) {
            assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        }
        // FedAvg alone misses it by the residual, which is not small here.
        let fedavg = mat(&((mean[&format!("m{LORA_B}")].matmul(&mean[&format!("m{LORA_A}")])? * scale)? + 0.25)?);
        let miss = fedavg.iter().flatten().zip(want.iter().flatten()).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
        assert!(miss > 0.1, "FedAvg of the factors is exact here ({miss}): the test does not test anything");
        // The head and the factors are FedAvg's.
        assert_eq!(global["classifier.bias"].to_vec1::<f32>()?, mean["classifier.bias"].to_vec1::<f32>()?);
        Ok(())
    }

    /// FlexLoRA: the new factors are the best rank-r approximation of the clients' averaged
    /// update (Eckart–Young): the squared error equals the sum of the discarded squared singular
    /// values, and no rank-r pair of the form FedAvg gives does better.
    #[test]
    fn flexlora_factors_are_the_best_rank_r_approximation_of_the_average() -> anyhow::Result<()> {
        let scale = 2.0;
        // One module, r = 1, in = out = 3.
        let client = |a: &[f32], b: &[f32]| {
            let dev = Device::Cpu;
            let mut s = State::new();
            s.insert(format!("m{LORA_A}"), Tensor::from_slice(a, (1, 3), &dev).unwrap());
            s.insert(format!("m{LORA_B}"), Tensor::from_slice(b, (3, 1), &dev).unwrap());
            s
        };
        // Rank 1 each; three different directions: the average has rank 3 > r = 1.
        let clients = [(client(&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0]), 1u64), (client(&[0.0, 2.0, 0.0], &[0.0, 1.0, 0.0]), 2), (client(&[0.0, 0.0, 1.0], &[0.0, 0.0, 3.0]), 3)];
        let (mut avg, mut products) = (WeightedAverage::new(), ProductSum::new());
        for (s, n) in &clients {
            avg.add(s, *n)?;
            products.add(s, *n)?;
        }
        let mean = avg.finish()?;
        let (global, energy) = products.finish_svd(mean.clone(), scale)?;
        // scale·mean(BᵢAᵢ) = 2·diag(1, 4, 9) / 6: singular values 3, 4/3, 1/3.
        let want = scale * 9.0 / 6.0;
        let got = ((global[&format!("m{LORA_B}")].matmul(&global[&format!("m{LORA_A}")])? * scale)?).to_vec2::<f32>()?;
        for (i, row) in got.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let w = if (i, j) == (2, 2) { want } else { 0.0 };
                assert!((*v as f64 - w).abs() < 1e-5, "({i}, {j}): {v} vs {w}");
            }
        }
        // Error² = (4/3)² + (1/3)², the discarded singular values; energy kept 9 / (9 + 16/9 + 1/9).
        let (s1, s2, s3) = (3.0f64, 4.0 / 3.0, 1.0 / 3.0);
        assert!((energy[0].1 - s1 * s1 / (s1 * s1 + s2 * s2 + s3 * s3)).abs() < 1e-6, "{energy:?}");
        // FedAvg of the factors: mean(B)·mean(A) is rank 1 too, and worse.
        let fedavg = ((mean[&format!("m{LORA_B}")].matmul(&mean[&format!("m{LORA_A}")])? * scale)?).to_vec2::<f32>()?;
        let exact = [[1.0 / 3.0, 0.0, 0.0], [0.0, 4.0 / 3.0, 0.0], [0.0, 0.0, 3.0]];
        let err = |m: &Vec<Vec<f32>>| m.iter().flatten().zip(exact.iter().flatten()).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>();
        assert!((err(&got) - (s2 * s2 + s3 * s3)).abs() < 1e-5, "{}", err(&got));
        assert!(err(&fedavg) > err(&got) + 0.1, "FedAvg {} vs FlexLoRA {}", err(&fedavg), err(&got));
        Ok(())
    }

    /// FlexLoRA with heterogeneous ranks: clients of rank 1, 2 and 3 reply zero-padded to the
    /// global rank 3; the global factors are the SVD of the weighted mean of their products, and
    /// each client's download (its rank's truncation) is the best rank-rᵢ approximation of that
    /// mean: its squared error is the sum of the singular values it drops.
    #[test]
    fn flexlora_gives_each_rank_the_best_approximation_of_the_average() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let client = |a: Vec<f32>, b: Vec<f32>, r: usize| {
            let mut s = State::new();
            s.insert(format!("m{LORA_A}"), Tensor::from_vec(a, (r, 3), &dev).unwrap());
            s.insert(format!("m{LORA_B}"), Tensor::from_vec(b, (3, r), &dev).unwrap());
            s
        };
        // Products diag(1, 0, 0), diag(0, 2, 1) and 3·e₀e₂ᵀ at ranks 1, 2, 3.
        let replies = [
            (client(vec![1.0, 0.0, 0.0], vec![1.0, 0.0, 0.0], 1), 1u64),
            (client(vec![0.0, 2.0, 0.0, 0.0, 0.0, 1.0], vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0], 2), 2),
            (client(vec![0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 3), 3),
        ];
        let like = replies[2].0.clone();
        let (mut avg, mut products) = (WeightedAverage::new(), ProductSum::new());
        for (s, n) in &replies {
            let padded = crate::ranks::pad(s, &like)?;
            avg.add(&padded, *n)?;
            products.add(&padded, *n)?;
        }
        let scale = 2.0;
        let (global, _) = products.finish_svd(avg.finish()?, scale)?;
        // scale·mean(nᵢ·BᵢAᵢ) = 2·(diag(1, 0, 0) + 2·diag(0, 2, 1) + 3·3e₀e₂ᵀ) / 6: not diagonal.
        let exact = [[2.0 / 6.0, 0.0, 6.0 * 3.0 / 6.0], [0.0, 8.0 / 6.0, 0.0], [0.0, 0.0, 4.0 / 6.0]];
        let m = Tensor::from_vec(exact.iter().flatten().map(|v| *v as f32).collect::<Vec<_>>(), (3, 3), &dev)?;
        // Singular values from the eigenvalues of MᵀM, computed apart from the SVD under test.
        let mtm = m.t()?.matmul(&m)?.to_vec2::<f32>()?;
        let sigma = symmetric_eigenvalues_3(&mtm).map(|l| l.max(0.0).sqrt());
        for rank in 1..=3 {
            let cut = crate::ranks::truncate(&global, rank)?;
            let approx = (cut[&format!("m{LORA_B}")].matmul(&cut[&format!("m{LORA_A}")])? * scale)?;
            let err2 = (approx - &m)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            let dropped: f64 = sigma[rank..].iter().map(|s| s * s).sum();
            assert!((err2 - dropped).abs() < 1e-5, "rank {rank}: error² {err2} vs dropped σ² {dropped} (σ {sigma:?})");
        }
        Ok(())
    }

    /// The eigenvalues of a symmetric 3×3 matrix, largest first (the trigonometric closed form).
    fn symmetric_eigenvalues_3(a: &[Vec<f32>]) -> [f64; 3] {
        let a: Vec<Vec<f64>> = a.iter().map(|r| r.iter().map(|v| *v as f64).collect()).collect();
        let p1 = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let q = (a[0][0] + a[1][1] + a[2][2]) / 3.0;
        let p2 = (a[0][0] - q).powi(2) + (a[1][1] - q).powi(2) + (a[2][2] - q).powi(2) + 2.0 * p1;
        let p = (p2 / 6.0).sqrt();
        let b: Vec<Vec<f64>> = (0..3).map(|i| (0..3).map(|j| (a[i][j] - if i == j { q } else { 0.0 }) / p).collect()).collect();
        let det = b[0][0] * (b[1][1] * b[2][2] - b[1][2] * b[2][1]) - b[0][1] * (b[1][0] * b[2][2] - b[1][2] * b[2][0]) + b[0][2] * (b[1][0] * b[2][1] - b[1][1] * b[2][0]);
        let phi = (det / 2.0).clamp(-1.0, 1.0).acos() / 3.0;
        let e1 = q + 2.0 * p * phi.cos();
        let e3 = q + 2.0 * p * (phi + 2.0 * std::f64::consts::PI / 3.0).cos();
        [e1, 3.0 * q - e1 - e3, e3]
    }

    /// With one A shared by every client (FFA-LoRA) `mean(B·A) = mean(B)·A`: FedEx-LoRA and FedAvg
    /// coincide.
    #[test]
    fn a_shared_a_leaves_no_residual_and_a_missing_factor_is_refused() -> anyhow::Result<()> {
        let a = [1.0, 0.0, 2.0, 0.0, 1.0, -1.0];
        let (mut avg, mut products) = (WeightedAverage::new(), ProductSum::new());
        for (b, n) in [([1.0, 0.0, 0.5, 2.0], 3u64), ([0.0, -1.0, 4.0, 1.0], 5)] {
            avg.add(&factors(&a, &b), n)?;
            products.add(&factors(&a, &b), n)?;
        }
        let global = products.finish(avg.finish()?, &State::new(), 1.0)?;
        let residual = global[&format!("m{BASE_OFFSET_SUFFIX}")].abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(residual < 1e-6, "{residual}");
        let mut lone = factors(&a, &[1.0, 0.0, 0.5, 2.0]);
        lone.remove(&format!("m{LORA_B}"));
        assert!(ProductSum::new().add(&lone, 1).is_err());
        Ok(())
    }
}
