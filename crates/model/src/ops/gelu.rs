//! GELU, exact (erf, BERT's `gelu`) and tanh-approximated (`gelu_new`, ALBERT), fused with backward.
//!
//! candle's own `gelu_erf` / `gelu` have correct but composed backward passes (eight tensor ops
//! each); these compute forward and derivative in one pass per element. Tests compare with them.

use super::cpu::{check_f32_cpu, par_rows_new, slice, tensor, with_f32};
use super::math::{self, simd_dispatch};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// `x * Φ(x) = 0.5 x (1 + erf(x / √2))`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu(x, "gelu_erf", "x")?;
    x.contiguous()?.apply_op1(Gelu { kind: Kind::Erf })
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (transformers' `gelu_new`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    check_f32_cpu(x, "gelu_tanh", "x")?;
    x.contiguous()?.apply_op1(Gelu { kind: Kind::Tanh })
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Erf,
    Tanh,
}

struct Gelu {
    kind: Kind,
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;
/// √(2/π)
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const CUBIC: f32 = 0.044_715;

#[inline(always)]
fn forward_inner(kind: Kind, x: &[f32], out: &mut [f32]) {
    match kind {
        Kind::Erf => {
            for (y, &v) in out.iter_mut().zip(x) {
                *y = 0.5 * v * (1.0 + math::erf(v * FRAC_1_SQRT_2));
            }
        }
        Kind::Tanh => {
            for (y, &v) in out.iter_mut().zip(x) {
                *y = 0.5 * v * (1.0 + math::tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v)));
            }
        }
    }
}
simd_dispatch!(fn forward(kind: Kind, x: &[f32], out: &mut [f32]) => forward_inner);

#[inline(always)]
fn backward_inner(kind: Kind, x: &[f32], g: &[f32], dx: &mut [f32]) {
    match kind {
        Kind::Erf => {
            for ((d, &v), &gv) in dx.iter_mut().zip(x).zip(g) {
                // e^{-v²/2} serves both the density and erf(v/√2) (= 1 - poly · e^{-(v/√2)²}).
                let gauss = math::exp(-0.5 * v * v);
                let cdf = 0.5 * (1.0 + math::erf_with_gauss(v * FRAC_1_SQRT_2, gauss));
                let pdf = INV_SQRT_2PI * gauss;
                *d = gv * (cdf + v * pdf);
            }
        }
        Kind::Tanh => {
            for ((d, &v), &gv) in dx.iter_mut().zip(x).zip(g) {
                let t = math::tanh(SQRT_2_OVER_PI * (v + CUBIC * v * v * v));
                let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * v * v);
                *d = gv * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * dinner);
            }
        }
    }
}
simd_dispatch!(fn backward(kind: Kind, x: &[f32], g: &[f32], dx: &mut [f32]) => backward_inner);

/// Elementwise work is split in rows of this length for the thread pool.
const SPLIT: usize = 4096;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Erf => "slora-gelu-erf",
            Kind::Tanh => "slora-gelu-tanh",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let out = par_rows_new(x.len(), SPLIT, |row0, block| {
            forward(self.kind, &x[row0 * SPLIT..row0 * SPLIT + block.len()], block)
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(x, self.name(), |x| {
            with_f32(grad, self.name(), |g| {
                par_rows_new(x.len(), SPLIT, |row0, block| {
                    let r = row0 * SPLIT..row0 * SPLIT + block.len();
                    backward(self.kind, &x[r.clone()], &g[r], block)
                })
            })
        })??;
        Ok(Some(tensor(dx, x.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_gelu_erf_and_tanh_match_candle_builtins() -> Result<()> {
        let x = Var::from_tensor(&(rand_tensor(&[4, 32, 1536], 21)? * 2.5)?)?;
        let upstream = rand_tensor(&[4, 32, 1536], 22)?;
        type Pair = (fn(&Tensor) -> Result<Tensor>, fn(&Tensor) -> Result<Tensor>, &'static str);
        let pairs: [Pair; 2] = [
            (gelu_erf, |t| t.gelu_erf(), "gelu_erf"),
            (gelu_tanh, |t| t.gelu(), "gelu_tanh"),
        ];
        for (fast_fn, slow_fn, name) in pairs {
            let fast = fast_fn(&x)?;
            let slow = slow_fn(&x)?;
            assert_close(&fast, &slow, 2e-6, name)?;
            let gf = (fast * &upstream)?.sum_all()?.backward()?;
            let gs = (slow * &upstream)?.sum_all()?.backward()?;
            // candle's backward formulas round their constants to 6 digits: allow for that.
            assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 2e-5, name)?;
        }
        Ok(())
    }

    #[test]
    fn ops_gelu_known_values() -> Result<()> {
        let x = Tensor::new(&[-3f32, -1.0, 0.0, 0.5, 2.0], &candle_core::Device::Cpu)?;
        // torch.nn.functional.gelu(x) and gelu(x, approximate="tanh") in float64.
        let erf = [-0.004_049_694, -0.158_655_25, 0.0, 0.345_731_23, 1.954_499_7];
        let tanh = [-0.003_637_392, -0.158_808_01, 0.0, 0.345_714, 1.954_597_7];
        let got_erf = gelu_erf(&x)?.to_vec1::<f32>()?;
        let got_tanh = gelu_tanh(&x)?.to_vec1::<f32>()?;
        for i in 0..5 {
            assert!((got_erf[i] - erf[i]).abs() < 1e-6, "erf {i}: {} vs {}", got_erf[i], erf[i]);
            assert!((got_tanh[i] - tanh[i]).abs() < 1e-6, "tanh {i}: {} vs {}", got_tanh[i], tanh[i]);
        }
        Ok(())
    }
}
