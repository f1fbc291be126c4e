//! LoRA linear as one op: `y = x W0ᵀ + b + s · (x Aᵀ) Bᵀ` through a frozen base, with gradients
//! for x, A (`[r, in]`) and B (`[out, r]`) only.
//!
//! Replaces candle's chain (frozen matmul, two adapter matmuls, scale, add) and its backward
//! (which would also form the frozen weight's gradient and a gradient buffer per node). The op
//! forms `W = W0 + s · B A` once per call (out × in × r multiply-adds, nothing next to the
//! T × out × in of the GEMM) and runs one GEMM through it each way: adding the rank-r product
//! onto the `[T, out]` output (and onto dx in the backward) would be a k = r GEMM that reads and
//! writes the whole activation, all memory traffic. The backward is then one full GEMM (dx) and
//! four thin ones (rank r) for dA and dB, computed per block of rows (see [`factor_grads`]).

use std::borrow::Cow;

use super::bf16::LowRank;
use super::cpu::{gemm_at, gemm_new_at, gemm_new_on, gemm_new_single, gemm_raw, slice, sum_in_order, tensor, with_f32, with_weight, MatView};
use super::gemm_args::GemmArgs;
use crate::spec::Precision;
use rayon::prelude::*;
use super::linear::{bias_rows, wants_grad, LinearShape};
use candle_core::{DType, bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// `x[.., in] · W0ᵀ + b + scale · (x Aᵀ) Bᵀ` with `w`, `b` constants and `a: [r, in]`,
/// `b_lora: [out, r]` (usually `Var`s). No adapter dropout: apply it outside (composed) if needed.
pub fn lora_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: &Tensor, b_lora: &Tensor, scale: f64) -> Result<Tensor> {
    lora_linear_at(x, w, b, a, b_lora, scale, Precision::Fp32)
}

/// [`lora_linear`] with the GEMMs through the base weight in `precision` (the factors' gradients
/// stay f32). An f32 base absorbs the update (one GEMM through `W0 + s B A`); a base held in bf16
/// cannot without rounding the update away, so its update is summed beside it, as peft does.
pub fn lora_linear_at(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: &Tensor, b_lora: &Tensor, scale: f64, precision: Precision) -> Result<Tensor> {
    const OP: &str = "lora_linear";
    let shape = LinearShape::check(x, w, b, OP)?;
    let r = a.dim(0)?;
    if a.dims() != [r, shape.in_dim] || b_lora.dims() != [shape.out_dim, r] {
        bail!("{OP}: lora_A {:?} / lora_B {:?} do not fit weight [{}, {}]", a.dims(), b_lora.dims(), shape.out_dim, shape.in_dim);
    }
    let op = LoraLinear {
        w: w.detach().contiguous()?,
        b: b.map(|b| b.detach().contiguous()).transpose()?,
        shape,
        rank: r,
        scale: scale as f32,
        merged: Default::default(),
        saved_xa: Default::default(),
        precision,
    };
    x.contiguous()?.apply_op3(&a.contiguous()?, &b_lora.contiguous()?, op)
}

/// The same function composed from candle ops (reference for tests).
pub fn lora_linear_slow(x: &Tensor, w: &Tensor, b: Option<&Tensor>, a: &Tensor, b_lora: &Tensor, scale: f64) -> Result<Tensor> {
    let base = super::frozen_linear_slow(x, &w.detach(), b.map(|b| b.detach()).as_ref())?;
    let in_dim = w.dim(1)?;
    let low = x.reshape(((), in_dim))?.matmul(&a.t()?)?.matmul(&b_lora.t()?)?;
    let low = low.reshape(base.shape())?;
    base + (low * scale)?
}

struct LoraLinear {
    w: Tensor,
    b: Option<Tensor>,
    shape: LinearShape,
    rank: usize,
    scale: f32,
    /// `W0 + s · B A` from the forward, taken by the backward (else formed again).
    merged: std::sync::Mutex<Option<Vec<f32>>>,
    /// `s · x Aᵀ` (`[T, r]`) from a forward over a bf16 base, taken by the backward.
    saved_xa: std::sync::Mutex<Option<Vec<f32>>>,
    precision: Precision,
}

impl LoraLinear {
    /// `W0 + s · B A` (`[out, in]`) for adapter factors `a` (`[r, in]`) and `bl` (`[out, r]`).
    fn merged_weight(&self, a: &[f32], bl: &[f32]) -> Result<Vec<f32>> {
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let mut w = with_f32(&self.w, "lora_linear", |w| w.to_vec())?;
        let (lhs, rhs) = (MatView::rows(bl, self.rank), MatView::rows(a, in_dim));
        let w_plus_sba = GemmArgs { m: out_dim, n: in_dim, k: self.rank, dst: w.as_mut_ptr(), dst_rs: in_dim, dst_cs: 1, accumulate: true, scale: self.scale, lhs, rhs, parallel: true };
        // SAFETY: w is exactly out × in, row-major, exclusively borrowed.
        unsafe { gemm_raw(Precision::Fp32, w_plus_sba) };
        Ok(w)
    }
}

impl LoraLinear {
    /// `s · x Aᵀ` (`[rows, r]`): the low-rank term's left operand over a bf16 base.
    fn scaled_xa(&self, x: &[f32], a: &[f32], rows: usize) -> Vec<f32> {
        let in_dim = self.shape.in_dim;
        gemm_new_on(Precision::Fp32, rows, self.rank, in_dim, MatView::rows(x, in_dim), MatView::transposed(a, in_dim), self.scale, false, true)
    }
}

/// Sizes of [`factor_grads`]'s operands.
#[derive(Clone, Copy)]
struct FactorShape {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    rank: usize,
}

/// `(dA [r, in], dB [out, r])` for `y = x (W0 + s B A)ᵀ`: with `xa = s x Aᵀ` and `gb = s g B` (both
/// `[T, r]`), `dA = gbᵀ x` and `dB = gᵀ xa`. Four thin products, each a pass over an activation-sized
/// matrix when done whole (memory-bound); here per block of rows, so each block of x and g is read
/// from memory once and reused from cache by both of its products. Blocks run in parallel; their
/// partial sums are added in block order (the same result for any thread count).
fn factor_grads(x: &[f32], g: &[f32], a: &[f32], bl: &[f32], shape: FactorShape, s: f32) -> (Vec<f32>, Vec<f32>) {
    let FactorShape { in_dim, out_dim, rank: r, .. } = shape;
    factor_grads_by_block(x, g, shape, |_, xb, gb| {
        let tb = xb.len() / in_dim;
        let xa = gemm_new_single(tb, r, in_dim, MatView::rows(xb, in_dim), MatView::transposed(a, in_dim), s);
        let gbl = gemm_new_single(tb, r, out_dim, MatView::rows(gb, out_dim), MatView::rows(bl, r), s);
        (Cow::Owned(xa), Cow::Owned(gbl))
    })
}

/// [`factor_grads`] from `xa = s x Aᵀ` and `gb = s g B` (`[T, r]`) formed already.
fn factor_grads_from(x: &[f32], g: &[f32], xa: &[f32], gb: &[f32], shape: FactorShape) -> (Vec<f32>, Vec<f32>) {
    let r = shape.rank;
    factor_grads_by_block(x, g, shape, |rows, _, _| (Cow::Borrowed(&xa[rows.start * r..rows.end * r]), Cow::Borrowed(&gb[rows.start * r..rows.end * r])))
}

/// `dA = gblᵀ x` and `dB = gᵀ xa` per block of 256 rows, where `thin(rows, x block, g block)` gives
/// the block's `xa` and `gbl` (`[rows, r]`); partial sums added in block order.
fn factor_grads_by_block<'a, F>(x: &[f32], g: &[f32], shape: FactorShape, thin: F) -> (Vec<f32>, Vec<f32>)
where
    F: Fn(std::ops::Range<usize>, &[f32], &[f32]) -> (Cow<'a, [f32]>, Cow<'a, [f32]>) + Sync,
{
    const ROWS_PER_BLOCK: usize = 256;
    let FactorShape { rows, in_dim, out_dim, rank: r } = shape;
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..rows.div_ceil(ROWS_PER_BLOCK))
        .into_par_iter()
        .map(|block| {
            let (t0, tb) = (block * ROWS_PER_BLOCK, ROWS_PER_BLOCK.min(rows - block * ROWS_PER_BLOCK));
            let xb = &x[t0 * in_dim..(t0 + tb) * in_dim];
            let gb = &g[t0 * out_dim..(t0 + tb) * out_dim];
            let (xa, gbl) = thin(t0..t0 + tb, xb, gb);
            let da = gemm_new_single(r, in_dim, tb, MatView::transposed(&gbl, r), MatView::rows(xb, in_dim), 1.0);
            let db = gemm_new_single(out_dim, r, tb, MatView::transposed(gb, out_dim), MatView::rows(&xa, r), 1.0);
            (da, db)
        })
        .collect();
    let (da, db): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (sum_in_order(da, r * in_dim), sum_in_order(db, out_dim * r))
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "slora-lora-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        const OP: &str = "lora_linear";
        let (x, a, bl) = (slice(s1, l1, OP)?, slice(s2, l2, OP)?, slice(s3, l3, OP)?);
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let rows = x.len() / in_dim.max(1);
        let (mut y, has_bias) = bias_rows(self.b.as_ref(), rows, out_dim, OP)?;
        if self.w.dtype() == DType::BF16 {
            // A base held in bf16 cannot absorb the update without rounding it away (an update below
            // 2⁻⁹ of W would vanish in bf16(W + s B A)): as peft computes it, beside the base. s (x Aᵀ) Bᵀ
            // is one more k step of the base GEMM: summed in the same f32 accumulators, no pass of its
            // own over y (its operands rounded to bf16, as autocast rounds them).
            let r = self.rank;
            let xa = self.scaled_xa(x, a, rows);
            let update = LowRank { lhs: MatView::rows(&xa, r), rhs: MatView::transposed(bl, r), r };
            with_weight(&self.w, OP, |w| w.x_wt(self.precision, rows, out_dim, in_dim, &mut y, has_bias, x, Some(update)))?;
            *self.saved_xa.lock().unwrap_or_else(|e| e.into_inner()) = Some(xa);
        } else {
            let w = self.merged_weight(a, bl)?;
            gemm_at(self.precision, rows, out_dim, in_dim, &mut y, has_bias, MatView::rows(x, in_dim), MatView::transposed(&w, in_dim));
            *self.merged.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        }
        Ok((CpuStorage::F32(y), Shape::from(self.shape.out_dims.clone())))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b_lora: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        const OP: &str = "lora_linear bwd";
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let r = self.rank;
        let s = self.scale;
        let (dx, da, db) = with_f32(grad, OP, |g| {
            with_f32(x, OP, |xs| {
                with_f32(a, OP, |a| {
                    with_f32(b_lora, OP, |bl| {
                        let rows = g.len() / out_dim.max(1);
                        let shape = FactorShape { rows, in_dim, out_dim, rank: r };
                        if self.w.dtype() == DType::BF16 {
                            // A base held in bf16: s x Aᵀ (from the forward) and s g B, each formed once,
                            // serve both dx's low-rank term and the factors' gradients.
                            let saved = self.saved_xa.lock().unwrap_or_else(|e| e.into_inner()).take();
                            let xa = match saved {
                                Some(xa) => xa,
                                None => self.scaled_xa(xs, a, rows),
                            };
                            let gb = gemm_new_on(Precision::Fp32, rows, r, out_dim, MatView::rows(g, out_dim), MatView::rows(bl, r), s, false, true);
                            // dx = g W + s (g B) A, the low-rank term as in the forward.
                            let dx = if wants_grad(x) {
                                let update = LowRank { lhs: MatView::rows(&gb, r), rhs: MatView::rows(a, in_dim), r };
                                Some(with_weight(&self.w, OP, |w| w.g_w(self.precision, rows, in_dim, out_dim, g, Some(update)))?)
                            } else {
                                None
                            };
                            let (da, db) = factor_grads_from(xs, g, &xa, &gb, shape);
                            return Ok::<_, candle_core::Error>((dx, da, db));
                        }
                        // dx = g (W0 + s B A) (when x takes gradients)
                        let dx = if wants_grad(x) {
                            let saved = self.merged.lock().unwrap_or_else(|e| e.into_inner()).take();
                            let w = match saved {
                                Some(w) => w,
                                None => self.merged_weight(a, bl)?,
                            };
                            Some(gemm_new_at(self.precision, rows, in_dim, out_dim, MatView::rows(g, out_dim), MatView::rows(&w, in_dim)))
                        } else {
                            None
                        };
                        let (da, db) = factor_grads(xs, g, a, bl, shape, s);
                        Ok((dx, da, db))
                    })
                })
            })
        })?????;
        let dx = dx.map(|dx| tensor(dx, x.shape())).transpose()?;
        Ok((dx, Some(tensor(da, (r, in_dim))?), Some(tensor(db, (out_dim, r))?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::frozen_linear_at;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_lora_linear_matches_composed_and_skips_base() -> Result<()> {
        let (out_dim, in_dim, r) = (1536, 384, 8);
        let x = Var::from_tensor(&rand_tensor(&[4, 32, in_dim], 81)?)?;
        let w = Var::from_tensor(&(rand_tensor(&[out_dim, in_dim], 82)? * 0.05)?)?;
        let bias = rand_tensor(&[out_dim], 83)?;
        let a = Var::from_tensor(&(rand_tensor(&[r, in_dim], 84)? * 0.05)?)?;
        let bl = Var::from_tensor(&(rand_tensor(&[out_dim, r], 85)? * 0.05)?)?;
        let upstream = rand_tensor(&[4, 32, out_dim], 86)?;
        let fast = lora_linear(&x, &w, Some(&bias), &a, &bl, 2.0)?;
        let slow = lora_linear_slow(&x, &w, Some(&bias), &a, &bl, 2.0)?;
        assert_close(&fast, &slow, 1e-5, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        for (v, name) in [(&x, "dx"), (&a, "dA"), (&bl, "dB")] {
            assert_close(gf.get(v).unwrap(), gs.get(v).unwrap(), 1e-5, name)?;
        }
        assert!(gf.get(&w).is_none(), "frozen base gets no gradient");
        // An input that takes no gradient (the first layer's, in adapter modes): dx is skipped,
        // dA and dB are unchanged.
        let x_const = x.as_detached_tensor();
        let fast = lora_linear(&x_const, &w, Some(&bias), &a, &bl, 2.0)?;
        let gc = (fast * &upstream)?.sum_all()?.backward()?;
        assert!(gc.get(&x_const).is_none());
        for (v, name) in [(&a, "dA"), (&bl, "dB")] {
            assert_close(gc.get(v).unwrap(), gs.get(v).unwrap(), 1e-5, name)?;
        }
        Ok(())
    }

    /// A base held in bf16 (mixed precision): the output within bf16 rounding of the f32 function,
    /// and the adapter's update summed beside the base, not rounded into it: an update a thousandth
    /// of W, which would vanish in bf16(W + s B A), comes out within bf16 rounding of itself.
    #[test]
    fn ops_lora_linear_over_a_bf16_base_keeps_the_update() -> Result<()> {
        if crate::ops::bf16::kernel() == crate::ops::bf16::Bf16Kernel::None {
            eprintln!("skipped: this CPU has no bf16 kernel");
            return Ok(());
        }
        let (out_dim, in_dim, r) = (384, 384, 8);
        let x = Var::from_tensor(&rand_tensor(&[2, 64, in_dim], 91)?)?;
        let w = (rand_tensor(&[out_dim, in_dim], 92)? * 0.05)?;
        let w16 = w.to_dtype(DType::BF16)?;
        let bias = rand_tensor(&[out_dim], 93)?;
        let a = Var::from_tensor(&(rand_tensor(&[r, in_dim], 94)? * 0.05)?)?;
        // An update a thousandth of the base's scale: below bf16's resolution of W.
        let bl = Var::from_tensor(&(rand_tensor(&[out_dim, r], 95)? * 0.001)?)?;
        let upstream = rand_tensor(&[2, 64, out_dim], 96)?;
        let fast = lora_linear_at(&x, &w16, Some(&bias), &a, &bl, 2.0, Precision::Bf16)?;
        let slow = lora_linear_slow(&x, &w, Some(&bias), &a, &bl, 2.0)?;
        assert_close(&fast, &slow, 1e-2, "forward within bf16 rounding")?;
        let base_only = frozen_linear_at(&x.as_detached_tensor(), &w16, Some(&bias), Precision::Bf16)?;
        let update = (x.as_detached_tensor().reshape(((), in_dim))?.matmul(&a.as_detached_tensor().t()?)?.matmul(&bl.as_detached_tensor().t()?)? * 2.0)?;
        assert_close(&(&fast - &base_only)?.reshape(((), out_dim))?, &update, 2e-2, "the update")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-2, "dx")?;
        // dA and dB never touch the base: f32 as without bf16.
        for (v, name) in [(&a, "dA"), (&bl, "dB")] {
            assert_close(gf.get(v).unwrap(), gs.get(v).unwrap(), 1e-5, name)?;
        }
        Ok(())
    }
}
