//! Layer normalisation over the last dimension, fused, with gradients for x, gamma and beta.
//!
//! candle-nn's fused LayerNorm has no backward (gradients silently stop there); this one does.
//! The backward recomputes mean and 1/std per row from x (cheaper than keeping them alive).

use super::cpu::{check_f32_cpu, par_rows_new, rows_per_task, slice, sum_in_order, tensor, uninit_f32, with_f32};
use super::math::{self, simd_dispatch};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last dim of `x`; gamma, beta: `[hidden]`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let hidden = x.dim(D::Minus1)?;
    for (t, what) in [(x, "x"), (gamma, "gamma"), (beta, "beta")] {
        check_f32_cpu(t, "layer_norm", what)?;
    }
    if gamma.dims() != [hidden] || beta.dims() != [hidden] {
        bail!("layer_norm: gamma {:?} and beta {:?} must be [{hidden}]", gamma.dims(), beta.dims());
    }
    x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNorm { eps: eps as f32 })
}

/// The same function composed from candle ops (reference for tests).
pub fn layer_norm_slow(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(gamma)?.broadcast_add(beta)
}

struct LayerNorm {
    eps: f32,
}

/// Mean and 1/std of one row.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = math::sum(x) / n;
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let mut var = acc.iter().sum::<f32>();
    for &v in tail {
        var += (v - mean) * (v - mean);
    }
    (mean, 1.0 / (var / n + eps).sqrt())
}

#[inline(always)]
fn forward_rows_inner(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let h = gamma.len();
    for (xr, yr) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let (mean, rstd) = moments(xr, eps);
        for i in 0..h {
            yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
        }
    }
}
simd_dispatch!(fn forward_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) => forward_rows_inner);

/// dx for a block of rows, accumulating dgamma (first h) and dbeta (last h) into `dparams`.
#[inline(always)]
fn backward_rows_inner(x: &[f32], g: &[f32], gamma: &[f32], eps: f32, dx: &mut [f32], dparams: &mut [f32]) {
    let h = gamma.len();
    let (dgamma, dbeta) = dparams.split_at_mut(h);
    let n = h as f32;
    for ((xr, gr), dxr) in x.chunks_exact(h).zip(g.chunks_exact(h)).zip(dx.chunks_exact_mut(h)) {
        let (mean, rstd) = moments(xr, eps);
        let mut sum_gy = [0f32; 8];
        let mut sum_gy_xhat = [0f32; 8];
        for i in 0..h {
            let xhat = (xr[i] - mean) * rstd;
            let gy = gr[i] * gamma[i];
            sum_gy[i % 8] += gy;
            sum_gy_xhat[i % 8] += gy * xhat;
            dgamma[i] += gr[i] * xhat;
            dbeta[i] += gr[i];
        }
        let mean_gy = sum_gy.iter().sum::<f32>() / n;
        let mean_gy_xhat = sum_gy_xhat.iter().sum::<f32>() / n;
        for i in 0..h {
            let xhat = (xr[i] - mean) * rstd;
            dxr[i] = rstd * (gr[i] * gamma[i] - mean_gy - xhat * mean_gy_xhat);
        }
    }
}
simd_dispatch!(fn backward_rows(x: &[f32], g: &[f32], gamma: &[f32], eps: f32, dx: &mut [f32], dparams: &mut [f32]) => backward_rows_inner);

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "slora-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "layer_norm")?;
        let gamma = slice(s2, l2, "layer_norm")?;
        let beta = slice(s3, l3, "layer_norm")?;
        let h = gamma.len();
        let out = par_rows_new(x.len(), h, |row0, block| {
            let x = &x[row0 * h..row0 * h + block.len()];
            forward_rows(x, gamma, beta, self.eps, block);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.elem_count();
        let (dx, dparams) = with_f32(x, "layer_norm bwd", |x| {
            with_f32(grad, "layer_norm bwd", |g| {
                with_f32(gamma, "layer_norm bwd", |gamma| layer_norm_backward(x, g, gamma, self.eps))
            })
        })???;
        let dgamma = tensor(dparams[..h].to_vec(), h)?;
        let dbeta = tensor(dparams[h..].to_vec(), h)?;
        Ok((Some(tensor(dx, x.shape())?), Some(dgamma), Some(dbeta)))
    }
}

/// `layer_norm(dropout(x) + residual)` in one op (BERT's `LayerNorm(dropout(dense(h)) + h)`),
/// with gradients for x, residual, gamma and beta. `dropout = Some((p, seed))` draws the same mask
/// as [`super::dropout`] with that seed. One graph node instead of three saves the gradient
/// buffers and additions candle spends per node in the backward.
pub fn residual_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    dropout: Option<(f32, u64)>,
) -> Result<Tensor> {
    const OP: &str = "residual_layer_norm";
    let hidden = x.dim(D::Minus1)?;
    for (t, what) in [(x, "x"), (residual, "residual"), (gamma, "gamma"), (beta, "beta")] {
        check_f32_cpu(t, OP, what)?;
    }
    if residual.dims() != x.dims() {
        bail!("{OP}: residual {:?} and x {:?} differ in shape", residual.dims(), x.dims());
    }
    if gamma.dims() != [hidden] || beta.dims() != [hidden] {
        bail!("{OP}: gamma {:?} and beta {:?} must be [{hidden}]", gamma.dims(), beta.dims());
    }
    let dropout = match dropout {
        Some((p, _)) if !(0.0..1.0).contains(&p) => bail!("{OP}: dropout probability {p} is outside [0, 1)"),
        Some((p, seed)) if p > 0.0 => Some((p, seed)),
        _ => None,
    };
    // gamma and beta travel as one [2, hidden] input (a custom op has at most three).
    let params = Tensor::stack(&[gamma, beta], 0)?;
    let op = ResidualLayerNorm { eps: eps as f32, dropout, mask: std::sync::OnceLock::new(), saved_sum: Default::default() };
    x.contiguous()?.apply_op3(&residual.contiguous()?, &params, op)
}

struct ResidualLayerNorm {
    eps: f32,
    dropout: Option<(f32, u64)>,
    mask: std::sync::OnceLock<Vec<u64>>,
    /// The forward's `dropout(x) + residual`, taken by the backward (else recomputed).
    saved_sum: std::sync::Mutex<Option<Vec<f32>>>,
}

impl ResidualLayerNorm {
    fn mask(&self, n: usize) -> &[u64] {
        match self.dropout {
            Some((p, seed)) => self.mask.get_or_init(|| super::dropout::keep_mask(n, p, seed)),
            None => &[],
        }
    }

    /// `dropout(x) + residual`, in parallel blocks.
    fn sum_input(&self, x: &[f32], residual: &[f32]) -> Vec<f32> {
        let mask = self.mask(x.len());
        let scale = self.dropout.map_or(1.0, |(p, _)| super::dropout::keep_scale(p));
        const BLOCK: usize = 16 * 1024;
        par_rows_new(x.len(), BLOCK, |b, out| {
            let range = b * BLOCK..b * BLOCK + out.len();
            if self.dropout.is_some() {
                super::dropout::apply_keep(&x[range.clone()], &mask[b * BLOCK / 64..], scale, out);
                for (o, r) in out.iter_mut().zip(&residual[range]) {
                    *o += r;
                }
            } else {
                for ((o, a), r) in out.iter_mut().zip(&x[range.clone()]).zip(&residual[range]) {
                    *o = a + r;
                }
            }
        })
    }
}

impl CustomOp3 for ResidualLayerNorm {
    fn name(&self) -> &'static str {
        "slora-residual-layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "residual_layer_norm";
        let (x, residual, params) = (slice(s1, l1, OP)?, slice(s2, l2, OP)?, slice(s3, l3, OP)?);
        let h = params.len() / 2;
        let (gamma, beta) = params.split_at(h);
        let sum = self.sum_input(x, residual);
        let out = par_rows_new(x.len(), h, |row0, block| {
            forward_rows(&sum[row0 * h..row0 * h + block.len()], gamma, beta, self.eps, block);
        });
        *self.saved_sum.lock().unwrap_or_else(|e| e.into_inner()) = Some(sum);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, residual: &Tensor, params: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        const OP: &str = "residual_layer_norm bwd";
        let h = params.dim(1)?;
        let (dsum, dx, dparams) = with_f32(x, OP, |x| {
            with_f32(residual, OP, |r| {
                with_f32(grad, OP, |g| {
                    with_f32(params, OP, |params| {
                        let saved = self.saved_sum.lock().unwrap_or_else(|e| e.into_inner()).take();
                        let sum = saved.filter(|s| s.len() == x.len()).unwrap_or_else(|| self.sum_input(x, r));
                        let (dsum, dparams) = layer_norm_backward(&sum, g, &params[..h], self.eps);
                        let dx = match self.dropout {
                            Some((p, _)) => {
                                let mask = self.mask(x.len());
                                const BLOCK: usize = 16 * 1024;
                                let scale = super::dropout::keep_scale(p);
                                Some(par_rows_new(dsum.len(), BLOCK, |b, out| {
                                    let start = b * BLOCK;
                                    super::dropout::apply_keep(&dsum[start..start + out.len()], &mask[start / 64..], scale, out);
                                }))
                            }
                            None => None,
                        };
                        (dsum, dx, dparams)
                    })
                })
            })
        })????;
        let dsum = tensor(dsum, x.shape())?;
        let dx = match dx {
            Some(dx) => tensor(dx, x.shape())?,
            None => dsum.clone(),
        };
        Ok((Some(dx), Some(dsum), Some(tensor(dparams, (2, h))?)))
    }
}

/// (dx, [dgamma; dbeta]) of a layer norm over rows of `gamma.len()`; parameter gradients are summed
/// per fixed block of rows, then in block order (deterministic whatever the thread count).
fn layer_norm_backward(x: &[f32], g: &[f32], gamma: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let h = gamma.len();
    // SAFETY: backward_rows writes every element of each block of whole rows.
    let mut dx = unsafe { uninit_f32(x.len()) };
    let per = rows_per_task(h) * h;
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(per)
        .enumerate()
        .map(|(b, dxb)| {
            let mut dparams = vec![0f32; 2 * h];
            let range = b * per..b * per + dxb.len();
            backward_rows(&x[range.clone()], &g[range], gamma, eps, dxb, &mut dparams);
            dparams
        })
        .collect();
    (dx, sum_in_order(partials, 2 * h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_layer_norm_forward_and_grads_match_composed() -> Result<()> {
        let x = Var::from_tensor(&(rand_tensor(&[4, 32, 384], 1)? * 3.0)?.affine(1.0, 0.5)?)?;
        let gamma = Var::from_tensor(&rand_tensor(&[384], 2)?.affine(0.5, 1.0)?)?;
        let beta = Var::from_tensor(&rand_tensor(&[384], 3)?)?;
        let upstream = rand_tensor(&[4, 32, 384], 4)?;
        let fast = layer_norm(&x, &gamma, &beta, 1e-12)?;
        let slow = layer_norm_slow(&x, &gamma, &beta, 1e-12)?;
        assert_close(&fast, &slow, 1e-5, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        for (v, name) in [(&x, "dx"), (&gamma, "dgamma"), (&beta, "dbeta")] {
            let a = gf.get(v).expect("fused op gives a gradient");
            let b = gs.get(v).expect("composed op gives a gradient");
            assert_close(a, b, 1e-4, name)?;
        }
        Ok(())
    }

    #[test]
    fn ops_residual_layer_norm_matches_composed() -> Result<()> {
        let x = Var::from_tensor(&rand_tensor(&[4, 32, 384], 6)?)?;
        let r = Var::from_tensor(&rand_tensor(&[4, 32, 384], 7)?)?;
        let gamma = Var::from_tensor(&rand_tensor(&[384], 8)?.affine(0.5, 1.0)?)?;
        let beta = Var::from_tensor(&rand_tensor(&[384], 9)?)?;
        let upstream = rand_tensor(&[4, 32, 384], 10)?;
        for dropout in [None, Some((0.1f32, 77u64))] {
            let fast = residual_layer_norm(&x, &r, &gamma, &beta, 1e-12, dropout)?;
            let dropped = match dropout {
                Some((p, seed)) => crate::ops::dropout(&x, p, seed)?,
                None => x.as_tensor().clone(),
            };
            let slow = layer_norm_slow(&(dropped + r.as_tensor())?, &gamma, &beta, 1e-12)?;
            assert_close(&fast, &slow, 1e-5, "forward")?;
            let gf = (fast * &upstream)?.sum_all()?.backward()?;
            let gs = (slow * &upstream)?.sum_all()?.backward()?;
            for (v, name) in [(&x, "dx"), (&r, "dresidual"), (&gamma, "dgamma"), (&beta, "dbeta")] {
                assert_close(gf.get(v).expect(name), gs.get(v).expect(name), 1e-4, name)?;
            }
        }
        Ok(())
    }

    #[test]
    fn ops_layer_norm_rejects_bad_gamma() {
        let x = Tensor::zeros((2, 8), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let g = Tensor::ones(7, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let err = layer_norm(&x, &g, &g, 1e-5).unwrap_err().to_string();
        assert!(err.contains("gamma"), "{err}");
    }
}
