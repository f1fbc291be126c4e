//! LoRA factors from a dense weight update by truncated SVD (SLoRA's switch from sparse to LoRA).
//!
//! Given ΔW (`rows × cols`, row-major), a rank r and LoRA's scaling s = lora_alpha / r:
//! - [`InitMode::Svd`] (SLoRA): `B = U_r √(S_r/s)`, `A = √(S_r/s) V_rᵀ`, so `s·B·A` is the best
//!   rank-r approximation ΔW_r; `base_correction = ΔW − s·B·A` (the truncation residual). The new
//!   base `W0 + base_correction` plus the adapter `s·B·A` equals `W0 + ΔW`: the model's function
//!   does not jump at the switch.
//! - [`InitMode::SvdB`] (FlexLoRA's reading): `B = U_r S_r / s`, `A = V_rᵀ`, same product ΔW_r,
//!   but `base_correction` is all zeros: the base stays W0 and the function changes by minus the
//!   truncation residual `ΔW − ΔW_r` (whose squared Frobenius norm is Σ_{i≥r} σ_i²).
//! - [`InitMode::Random`] (peft's default init, the LoRA baseline): A kaiming-uniform
//!   (`U(−1/√cols, 1/√cols)`, peft's `kaiming_uniform_(a=√5)`), B = 0, `base_correction = ΔW`.
//!
//! The SVD is faer's thin SVD in f64 (not its partial SVD, unreliable for r ≥ 32). The correction is
//! computed from the f32-rounded factors, so `W0 + base_correction + s·B·A` reproduces
//! `W0 + ΔW` up to f32 rounding of the sum.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors, SvdError};
use faer::diag::Diag;
use faer::{Mat, Par};
use rand::{Rng, SeedableRng};

/// How the factors are initialised; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitMode {
    /// SLoRA: factors share √(S_r/s); the base absorbs the truncation residual.
    Svd,
    /// FlexLoRA: B carries S_r/s, A = V_rᵀ; the base is left unchanged.
    SvdB,
    /// peft's default: random A, zero B; the base absorbs all of ΔW.
    Random {
        /// Seed of A's draw.
        seed: u64,
    },
}

/// LoRA factors for one matrix and what the base must absorb.
#[derive(Clone, Debug)]
pub struct LoraInit {
    /// `lora_A`, `rank × cols`, row-major.
    pub a: Vec<f32>,
    /// `lora_B`, `rows × rank`, row-major.
    pub b: Vec<f32>,
    /// Added to the base weight (`rows × cols`): ΔW − s·B·A for `Svd` and `Random`, zeros for `SvdB`.
    pub base_correction: Vec<f32>,
    /// All min(rows, cols) singular values of ΔW, non-increasing.
    pub singular_values: Vec<f32>,
    /// Σ_{i<rank} σ_i² / Σ σ_i² (1 when ΔW is zero).
    pub energy_kept: f64,
    /// Output features (rows of ΔW).
    pub rows: usize,
    /// Input features (columns of ΔW).
    pub cols: usize,
    /// LoRA rank r.
    pub rank: usize,
}

/// Why factors could not be computed.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the messages say it
pub enum SvdInitError {
    #[error("svd_init: delta has {got} values, expected rows {rows} x cols {cols}")]
    Size { got: usize, rows: usize, cols: usize },
    #[error("svd_init: rank {rank} must be between 1 and min(rows, cols) = {max}")]
    Rank { rank: usize, max: usize },
    #[error("svd_init: scale {0} must be positive and finite")]
    Scale(f64),
    #[error("svd_init: delta holds a non-finite value at flat index {0}")]
    NotFinite(usize),
    #[error("svd_init: SVD did not converge for a {rows}x{cols} matrix")]
    NoConvergence { rows: usize, cols: usize },
}

/// faer's thin SVD `(U, σ, V)` on one thread. `Mat::thin_svd` uses faer's global parallelism (all
/// of rayon's threads), whose blocked reductions round differently for different thread counts;
/// callers parallelise across matrices instead, so the factors do not depend on the thread count.
fn thin_svd_sequential(a: &Mat<f64>) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>), SvdError> {
    let (m, n) = a.shape();
    let size = m.min(n);
    let (mut u, mut v, mut s) = (Mat::<f64>::zeros(m, size), Mat::<f64>::zeros(n, size), Diag::<f64>::zeros(size));
    let scratch = svd_scratch::<f64>(m, n, ComputeSvdVectors::Thin, ComputeSvdVectors::Thin, Par::Seq, Default::default());
    svd(
        a.as_ref(),
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )?;
    let sigma = (0..size).map(|i| s.column_vector()[i]).collect();
    Ok((u, sigma, v))
}

/// Factors a dense update `delta` (`rows × cols`, row-major) into rank-`rank` LoRA factors.
pub fn lora_from_delta(
    delta: &[f32],
    rows: usize,
    cols: usize,
    rank: usize,
    scale: f64,
    mode: InitMode,
) -> Result<LoraInit, SvdInitError> {
    if delta.len() != rows * cols {
        return Err(SvdInitError::Size { got: delta.len(), rows, cols });
    }
    let max = rows.min(cols);
    if rank == 0 || rank > max {
        return Err(SvdInitError::Rank { rank, max });
    }
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(SvdInitError::Scale(scale));
    }
    if let Some(i) = delta.iter().position(|v| !v.is_finite()) {
        return Err(SvdInitError::NotFinite(i));
    }
    let dw = Mat::<f64>::from_fn(rows, cols, |i, j| delta[i * cols + j] as f64);
    let (u, sigma, v) = thin_svd_sequential(&dw).map_err(|_| SvdInitError::NoConvergence { rows, cols })?;
    let total: f64 = sigma.iter().map(|x| x * x).sum();
    let kept: f64 = sigma[..rank].iter().map(|x| x * x).sum();
    let energy_kept = if total > 0.0 { kept / total } else { 1.0 };

    let (a, b): (Vec<f32>, Vec<f32>) = match mode {
        InitMode::Svd => {
            let root: Vec<f64> = sigma[..rank].iter().map(|x| (x / scale).sqrt()).collect();
            let b = (0..rows * rank).map(|k| (u[(k / rank, k % rank)] * root[k % rank]) as f32).collect();
            let a = (0..rank * cols).map(|k| (root[k / cols] * v[(k % cols, k / cols)]) as f32).collect();
            (a, b)
        }
        InitMode::SvdB => {
            let b = (0..rows * rank).map(|k| (u[(k / rank, k % rank)] * sigma[k % rank] / scale) as f32).collect();
            let a = (0..rank * cols).map(|k| v[(k % cols, k / cols)] as f32).collect();
            (a, b)
        }
        InitMode::Random { seed } => {
            let bound = 1.0 / (cols as f64).sqrt();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a = (0..rank * cols).map(|_| rng.random_range(-bound..bound) as f32).collect();
            (a, vec![0f32; rows * rank])
        }
    };

    let base_correction = match mode {
        InitMode::SvdB => vec![0f32; rows * cols],
        InitMode::Random { .. } => delta.to_vec(),
        InitMode::Svd => {
            // ΔW − s·B·A from the f32 factors actually returned, in f64.
            let bm = Mat::<f64>::from_fn(rows, rank, |i, k| b[i * rank + k] as f64);
            let am = Mat::<f64>::from_fn(rank, cols, |k, j| a[k * cols + j] as f64);
            let ba = &bm * &am;
            (0..rows * cols).map(|k| (delta[k] as f64 - scale * ba[(k / cols, k % cols)]) as f32).collect()
        }
    };

    Ok(LoraInit {
        a,
        b,
        base_correction,
        singular_values: sigma.iter().map(|&x| x as f32).collect(),
        energy_kept,
        rows,
        cols,
        rank,
    })
}

/// `s·B·A` as a row-major `rows × cols` matrix (for merging and for checks).
pub fn lora_product(init: &LoraInit, scale: f64) -> Vec<f32> {
    let (rows, cols, rank) = (init.rows, init.cols, init.rank);
    let bm = Mat::<f64>::from_fn(rows, rank, |i, k| init.b[i * rank + k] as f64);
    let am = Mat::<f64>::from_fn(rank, cols, |k, j| init.a[k * cols + j] as f64);
    let ba = &bm * &am;
    (0..rows * cols).map(|k| (scale * ba[(k / cols, k % cols)]) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, StandardNormal};

    fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
    }

    /// ΔW = Q1 diag(spectrum) Q2ᵀ with random orthonormal Q1 (rows × k), Q2 (cols × k).
    fn with_spectrum(rows: usize, cols: usize, spectrum: &[f64], seed: u64) -> Vec<f32> {
        let k = spectrum.len();
        let g1 = randn(rows * k, seed);
        let g2 = randn(cols * k, seed + 1);
        let q1 = Mat::<f64>::from_fn(rows, k, |i, j| g1[i * k + j] as f64).qr().compute_thin_Q();
        let q2 = Mat::<f64>::from_fn(cols, k, |i, j| g2[i * k + j] as f64).qr().compute_thin_Q();
        let mut out = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                out[i * cols + j] = (0..k).map(|t| q1[(i, t)] * spectrum[t] * q2[(j, t)]).sum::<f64>() as f32;
            }
        }
        out
    }

    fn rel_err(got: &[f32], want: &[f32]) -> f64 {
        let num = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
        let den = want.iter().map(|b| (*b as f64).abs()).fold(0.0, f64::max);
        num / den.max(1e-30)
    }

    #[test]
    fn svd_init_reconstructs_base_plus_delta() {
        let (rows, cols, rank, scale) = (96, 160, 8, 16.0 / 8.0);
        let w0 = randn(rows * cols, 1);
        let delta: Vec<f32> = randn(rows * cols, 2).iter().map(|x| x * 0.01).collect();
        let target: Vec<f32> = w0.iter().zip(&delta).map(|(w, d)| w + d).collect();
        for mode in [InitMode::Svd, InitMode::Random { seed: 5 }] {
            let init = lora_from_delta(&delta, rows, cols, rank, scale, mode).unwrap();
            assert_eq!((init.a.len(), init.b.len()), (rank * cols, rows * rank));
            let ba = lora_product(&init, scale);
            let rebuilt: Vec<f32> = (0..rows * cols).map(|k| w0[k] + init.base_correction[k] + ba[k]).collect();
            assert!(rel_err(&rebuilt, &target) < 1e-5, "{mode:?}: {}", rel_err(&rebuilt, &target));
        }
    }

    #[test]
    fn svd_init_energy_and_spectrum_are_exact_on_known_matrix() {
        let spectrum = [10.0, 6.0, 3.0, 2.0, 1.0, 0.5];
        let delta = with_spectrum(40, 70, &spectrum, 11);
        let init = lora_from_delta(&delta, 40, 70, 3, 2.0, InitMode::Svd).unwrap();
        assert_eq!(init.singular_values.len(), 40);
        for (i, want) in spectrum.iter().enumerate() {
            assert!((init.singular_values[i] as f64 - want).abs() < 1e-4, "σ{i} = {}", init.singular_values[i]);
        }
        assert!(init.singular_values[6] < 1e-4, "rank 6 matrix");
        let total: f64 = spectrum.iter().map(|s| s * s).sum();
        let want = (100.0 + 36.0 + 9.0) / total;
        assert!((init.energy_kept - want).abs() < 1e-6, "{} vs {want}", init.energy_kept);
        // The residual is exactly the dropped part of the spectrum.
        let residual: f64 = init.base_correction.iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((residual - (4.0 + 1.0 + 0.25)).abs() < 1e-3, "residual {residual}");
        // A rank-r SVD init makes the adapter carry exactly the top-r part: its squared norm.
        let adapter: f64 = lora_product(&init, 2.0).iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((adapter - 145.0).abs() < 1e-2, "adapter energy {adapter}");
    }

    #[test]
    fn svd_init_modes_split_scale_as_documented() {
        let spectrum = [4.0, 1.0];
        let delta = with_spectrum(12, 20, &spectrum, 3);
        let scale = 2.0;
        let svd = lora_from_delta(&delta, 12, 20, 1, scale, InitMode::Svd).unwrap();
        let flex = lora_from_delta(&delta, 12, 20, 1, scale, InitMode::SvdB).unwrap();
        // Same product s·B·A = σ1 u1 v1ᵀ.
        assert!(rel_err(&lora_product(&svd, scale), &lora_product(&flex, scale)) < 1e-5);
        // Svd: |B| = |A| = √(σ1/s); SvdB: |A| = 1, |B| = σ1/s.
        let norm = |x: &[f32]| x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm(&svd.a) - 2f64.sqrt()).abs() < 1e-5 && (norm(&svd.b) - 2f64.sqrt()).abs() < 1e-5);
        assert!((norm(&flex.a) - 1.0).abs() < 1e-5 && (norm(&flex.b) - 2.0).abs() < 1e-5);
        assert!(flex.base_correction.iter().all(|&x| x == 0.0), "SvdB leaves the base alone");
        // Svd's correction is the residual σ2 u2 v2ᵀ: norm 1.
        assert!((norm(&svd.base_correction) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn svd_init_random_is_peft_default() {
        let delta = randn(30 * 50, 9);
        let init = lora_from_delta(&delta, 30, 50, 4, 1.0, InitMode::Random { seed: 1 }).unwrap();
        let bound = 1.0 / 50f32.sqrt();
        assert!(init.a.iter().all(|x| x.abs() <= bound));
        assert!(init.a.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.9 * bound, "fills the range");
        assert!(init.b.iter().all(|&x| x == 0.0));
        assert_eq!(init.base_correction, delta);
        let again = lora_from_delta(&delta, 30, 50, 4, 1.0, InitMode::Random { seed: 1 }).unwrap();
        assert_eq!(init.a, again.a);
    }

    #[test]
    fn svd_init_rejects_bad_input() {
        let d = vec![0f32; 12];
        assert!(matches!(lora_from_delta(&d, 3, 5, 1, 1.0, InitMode::Svd), Err(SvdInitError::Size { .. })));
        assert!(matches!(lora_from_delta(&d, 3, 4, 4, 1.0, InitMode::Svd), Err(SvdInitError::Rank { .. })));
        assert!(matches!(lora_from_delta(&d, 3, 4, 1, 0.0, InitMode::Svd), Err(SvdInitError::Scale(_))));
        let mut nan = d.clone();
        nan[7] = f32::NAN;
        assert!(matches!(lora_from_delta(&nan, 3, 4, 1, 1.0, InitMode::Svd), Err(SvdInitError::NotFinite(7))));
        let zero = lora_from_delta(&d, 3, 4, 2, 1.0, InitMode::Svd).unwrap();
        assert_eq!(zero.energy_kept, 1.0);
        assert!(zero.a.iter().chain(&zero.b).all(|&x| x == 0.0));
    }
}
