//! Softmax over the last dimension, fused, with backward `dx = y * (g - sum(g * y))`.
//!
//! candle-nn's `ops::softmax_last_dim` has no backward; the composed twin is for tests.

use super::cpu::{check_f32_cpu, par_rows_new, slice, tensor, with_f32};
use super::math::{self, simd_dispatch};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};

/// Softmax over the last dim. Logits at or below -87.3 (masked positions) get exactly 0.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu(x, "softmax_last_dim", "x")?;
    x.contiguous()?.apply_op1(Softmax)
}

/// The same function composed from candle ops (reference for tests).
pub fn softmax_last_dim_slow(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

struct Softmax;

#[inline(always)]
fn forward_rows_inner(x: &[f32], cols: usize, out: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let m = math::max(xr);
        for (y, &v) in yr.iter_mut().zip(xr) {
            *y = math::exp(v - m);
        }
        let inv = 1.0 / math::sum(yr);
        for y in yr.iter_mut() {
            *y *= inv;
        }
    }
}
simd_dispatch!(fn forward_rows(x: &[f32], cols: usize, out: &mut [f32]) => forward_rows_inner);

#[inline(always)]
fn backward_rows_inner(y: &[f32], g: &[f32], cols: usize, dx: &mut [f32]) {
    for ((yr, gr), dr) in y.chunks_exact(cols).zip(g.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols)) {
        let s = math::dot(yr, gr);
        for i in 0..cols {
            dr[i] = yr[i] * (gr[i] - s);
        }
    }
}
simd_dispatch!(fn backward_rows(y: &[f32], g: &[f32], cols: usize, dx: &mut [f32]) => backward_rows_inner);

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "slora-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "softmax_last_dim")?;
        let cols = l.dims().last().copied().unwrap_or(1);
        let out = par_rows_new(x.len(), cols, |row0, block| {
            forward_rows(&x[row0 * cols..row0 * cols + block.len()], cols, block)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let cols = res.dim(D::Minus1)?;
        let dx = with_f32(res, "softmax bwd", |y| {
            with_f32(grad, "softmax bwd", |g| {
                par_rows_new(y.len(), cols, |row0, block| {
                    let r = row0 * cols..row0 * cols + block.len();
                    backward_rows(&y[r.clone()], &g[r], cols, block)
                })
            })
        })??;
        Ok(Some(tensor(dx, res.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_softmax_forward_and_grad_match_composed() -> Result<()> {
        // Attention-shaped scores with a masked (very negative) key column.
        let mut scores = (rand_tensor(&[4, 12, 32, 37], 11)? * 4.0)?;
        let mask = Tensor::arange(0u32, 37, &candle_core::Device::Cpu)?
            .ge(30u32)?
            .to_dtype(candle_core::DType::F32)?
            .affine(-3.4e38, 0.0)?;
        scores = scores.broadcast_add(&mask)?;
        let x = Var::from_tensor(&scores)?;
        let upstream = rand_tensor(&[4, 12, 32, 37], 12)?;
        let fast = softmax_last_dim(&x)?;
        let slow = softmax_last_dim_slow(&x)?;
        assert_close(&fast, &slow, 1e-6, "forward")?;
        let masked = fast.narrow(D::Minus1, 30, 7)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(masked, 0.0, "masked keys get exactly zero probability");
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5, "dx")
    }
}
