//! Linear layer with a frozen dense base plus a trainable sparse delta on a fixed index set.
//!
//! `y = x (W0 + scatter(values))ᵀ + b`. Backward gives dL/dx = g · W_eff and, for the values, a
//! sampled dense-dense product over the index set: `dvalues[k] = Σ_t g[t, row_k] · x[t, col_k]`,
//! work ∝ nnz × tokens instead of the out × in × tokens of a dense weight gradient.

use super::cpu::{slice, sum_in_order, tensor, transpose_into, with_f32, with_weight, WeightData};
use crate::spec::Precision;
use super::linear::{bias_rows, wants_grad, LinearShape};
use super::math::{self, simd_dispatch};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// `y[.., out] = x[.., in] · (w_base + delta)ᵀ + b`, where `delta` is zero except at the sorted,
/// distinct flat indices `idx` (`row * in + col`), which hold `values` (`[nnz]`, usually a `Var`).
/// Gradients flow to `x` and `values` only.
pub fn sparse_delta_linear(
    x: &Tensor,
    w_base: &Tensor,
    idx: &Arc<Vec<u32>>,
    values: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    sparse_delta_linear_at(x, w_base, idx, values, b, Precision::Fp32)
}

/// [`sparse_delta_linear`] with the GEMMs through the effective weight in `precision` (the values'
/// gradient stays f32).
pub fn sparse_delta_linear_at(
    x: &Tensor,
    w_base: &Tensor,
    idx: &Arc<Vec<u32>>,
    values: &Tensor,
    b: Option<&Tensor>,
    precision: Precision,
) -> Result<Tensor> {
    const OP: &str = "sparse_delta_linear";
    let shape = LinearShape::check(x, w_base, b, OP)?;
    check_index(idx, values, shape.out_dim * shape.in_dim, OP)?;
    let op = SparseDeltaLinear {
        w_base: w_base.detach().contiguous()?,
        idx: Arc::clone(idx),
        b: b.map(|b| b.detach().contiguous()).transpose()?,
        shape,
        saved_weight: Default::default(),
        precision,
    };
    x.contiguous()?.apply_op2(&values.contiguous()?, op)
}

/// The same function composed from candle ops (reference for tests; dense weight gradient).
pub fn sparse_delta_linear_slow(
    x: &Tensor,
    w_base: &Tensor,
    idx: &Arc<Vec<u32>>,
    values: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let (out_dim, in_dim) = w_base.dims2()?;
    let ids = Tensor::from_slice(idx.as_slice(), idx.len(), values.device())?;
    let delta = Tensor::zeros(out_dim * in_dim, values.dtype(), values.device())?.index_add(&ids, values, 0)?;
    let w_eff = (w_base.detach() + delta.reshape((out_dim, in_dim))?)?;
    super::linear::frozen_linear_slow(x, &w_eff, b.map(|b| b.detach()).as_ref())
}

/// Indices must be sorted, distinct, inside the matrix, and as many as the values.
fn check_index(idx: &[u32], values: &Tensor, size: usize, op: &str) -> Result<()> {
    if values.dims() != [idx.len()] {
        bail!("{op}: values {:?} must be 1-D with one entry per index ({})", values.dims(), idx.len());
    }
    if let Some(w) = idx.windows(2).find(|w| w[0] >= w[1]) {
        bail!("{op}: index set must be sorted and distinct ({} then {})", w[0], w[1]);
    }
    if let Some(&last) = idx.last() {
        if last as usize >= size {
            bail!("{op}: index {last} outside the {size}-entry weight");
        }
    }
    super::cpu::check_f32_cpu(values, op, "values")
}

struct SparseDeltaLinear {
    w_base: Tensor,
    idx: Arc<Vec<u32>>,
    b: Option<Tensor>,
    shape: LinearShape,
    /// The forward's effective weight, taken by the backward (else formed again).
    saved_weight: std::sync::Mutex<Option<EffectiveWeight>>,
    precision: Precision,
}

/// `W0 + scatter(values)`, in the dtype the base is held in.
enum EffectiveWeight {
    F32(Vec<f32>),
    /// A base held in bf16: the sum is rounded to bf16 at the index set only (every other entry is
    /// the base's, already bf16), which the GEMM would round it to anyway.
    Bf16(Vec<half::bf16>),
}

impl EffectiveWeight {
    fn data(&self) -> WeightData<'_> {
        match self {
            EffectiveWeight::F32(w) => WeightData::F32(w),
            EffectiveWeight::Bf16(w) => WeightData::Bf16(w),
        }
    }
}

impl SparseDeltaLinear {
    /// W0 with the delta added at the index set (one copy of the weight; the GEMM dominates).
    fn effective_weight(&self, values: &[f32]) -> Result<EffectiveWeight> {
        with_weight(&self.w_base, "sparse_delta_linear", |w| match w {
            WeightData::F32(w) => {
                let mut w = w.to_vec();
                for (&i, &v) in self.idx.iter().zip(values) {
                    w[i as usize] += v;
                }
                EffectiveWeight::F32(w)
            }
            WeightData::Bf16(w) => {
                let mut w = w.to_vec();
                for (&i, &v) in self.idx.iter().zip(values) {
                    w[i as usize] = half::bf16::from_f32(w[i as usize].to_f32() + v);
                }
                EffectiveWeight::Bf16(w)
            }
        })
    }
}

/// `out[k] = dot(gt[row_k], xt[col_k])` over token-major transposes `gt: [out, T]`, `xt: [in, T]`.
#[inline(always)]
fn sampled_dots_inner(gt: &[f32], xt: &[f32], tokens: usize, in_dim: usize, idx: &[u32], out: &mut [f32]) {
    for (o, &flat) in out.iter_mut().zip(idx) {
        let (row, col) = (flat as usize / in_dim, flat as usize % in_dim);
        *o = math::dot(&gt[row * tokens..(row + 1) * tokens], &xt[col * tokens..(col + 1) * tokens]);
    }
}
simd_dispatch!(fn sampled_dots(gt: &[f32], xt: &[f32], tokens: usize, in_dim: usize, idx: &[u32], out: &mut [f32]) => sampled_dots_inner);

/// `dvalues[k] = Σ_t g[t, row_k] · x[t, col_k]` over blocks of tokens: each block's slices of g
/// and x are transposed into cache-resident buffers (so every product is a contiguous dot of the
/// block's length), partial sums per block are added in block order (deterministic).
fn sampled_dense_dense(g: &[f32], x: &[f32], tokens: usize, out_dim: usize, in_dim: usize, idx: &[u32]) -> Vec<f32> {
    // 128 tokens: a block of g and x stays in L2 (measured best of 32…512, `ops_sampled_dense_dense_timing`).
    sampled_dense_dense_blocks(g, x, tokens, out_dim, in_dim, idx, 128)
}

/// [`sampled_dense_dense`] with `per_block` tokens per block.
fn sampled_dense_dense_blocks(g: &[f32], x: &[f32], tokens: usize, out_dim: usize, in_dim: usize, idx: &[u32], per_block: usize) -> Vec<f32> {
    let blocks = tokens.div_ceil(per_block);
    let partials: Vec<Vec<f32>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let t0 = b * per_block;
            let tb = per_block.min(tokens - t0);
            let mut gt = vec![0f32; out_dim * tb];
            let mut xt = vec![0f32; in_dim * tb];
            transpose_into(&g[t0 * out_dim..(t0 + tb) * out_dim], tb, out_dim, &mut gt);
            transpose_into(&x[t0 * in_dim..(t0 + tb) * in_dim], tb, in_dim, &mut xt);
            let mut part = vec![0f32; idx.len()];
            sampled_dots(&gt, &xt, tb, in_dim, idx, &mut part);
            part
        })
        .collect();
    sum_in_order(partials, idx.len())
}

impl CustomOp2 for SparseDeltaLinear {
    fn name(&self) -> &'static str {
        "slora-sparse-delta-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "sparse_delta_linear")?;
        let values = slice(s2, l2, "sparse_delta_linear")?;
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let rows = x.len() / in_dim.max(1);
        let w = self.effective_weight(values)?;
        let (mut y, has_bias) = bias_rows(self.b.as_ref(), rows, out_dim, "sparse_delta_linear")?;
        w.data().x_wt(self.precision, rows, out_dim, in_dim, &mut y, has_bias, x, None);
        *self.saved_weight.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        Ok((CpuStorage::F32(y), Shape::from(self.shape.out_dims.clone())))
    }

    fn bwd(&self, x: &Tensor, values: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        const OP: &str = "sparse_delta_linear bwd";
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let saved = self.saved_weight.lock().unwrap_or_else(|e| e.into_inner()).take();
        let w = match saved {
            Some(w) => w,
            None if wants_grad(x) => with_f32(values, OP, |v| self.effective_weight(v))??,
            None => EffectiveWeight::F32(Vec::new()),
        };
        let x_t = x;
        let (dx, dvalues) = with_f32(grad, OP, |g| {
            with_f32(x, OP, |x| {
                let tokens = g.len() / out_dim.max(1);
                let dx = wants_grad(x_t).then(|| w.data().g_w(self.precision, tokens, in_dim, out_dim, g, None));
                let dvalues = sampled_dense_dense(g, x, tokens, out_dim, in_dim, &self.idx);
                (dx, dvalues)
            })
        })??;
        let dx = dx.map(|dx| tensor(dx, x.shape())).transpose()?;
        Ok((dx, Some(tensor(dvalues, values.shape())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_sparse_delta_linear_matches_dense_scatter() -> Result<()> {
        let (out_dim, in_dim) = (1536, 384);
        let idx = Arc::new(crate::sparse::random_mask(out_dim, in_dim, 0.01, 7));
        let x = Var::from_tensor(&rand_tensor(&[4, 32, in_dim], 41)?)?;
        let w0 = Var::from_tensor(&(rand_tensor(&[out_dim, in_dim], 42)? * 0.05)?)?;
        let values = Var::from_tensor(&rand_tensor(&[idx.len()], 43)?)?;
        let b = rand_tensor(&[out_dim], 44)?;
        let upstream = rand_tensor(&[4, 32, out_dim], 45)?;
        let fast = sparse_delta_linear(&x, &w0, &idx, &values, Some(&b))?;
        let slow = sparse_delta_linear_slow(&x, &w0, &idx, &values, Some(&b))?;
        assert_close(&fast, &slow, 1e-5, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5, "dx")?;
        assert_close(gf.get(&values).unwrap(), gs.get(&values).unwrap(), 1e-5, "dvalues")?;
        assert!(gf.get(&w0).is_none(), "base weight gets no gradient");
        Ok(())
    }

    /// A base held in bf16: the output and dx within bf16 rounding of the f32 function; the values'
    /// gradient never touches the base and stays f32-exact.
    #[test]
    fn ops_sparse_delta_linear_over_a_bf16_base() -> Result<()> {
        if crate::ops::bf16::kernel() == crate::ops::bf16::Bf16Kernel::None {
            eprintln!("skipped: this CPU has no bf16 kernel");
            return Ok(());
        }
        let (out_dim, in_dim) = (384, 384);
        let idx = Arc::new(crate::sparse::random_mask(out_dim, in_dim, 0.01, 8));
        let x = Var::from_tensor(&rand_tensor(&[2, 64, in_dim], 51)?)?;
        let w0 = (rand_tensor(&[out_dim, in_dim], 52)? * 0.05)?;
        let values = Var::from_tensor(&(rand_tensor(&[idx.len()], 53)? * 0.05)?)?;
        let upstream = rand_tensor(&[2, 64, out_dim], 55)?;
        let w16 = w0.to_dtype(candle_core::DType::BF16)?;
        let fast = sparse_delta_linear_at(&x, &w16, &idx, &values, None, Precision::Bf16)?;
        let slow = sparse_delta_linear_slow(&x, &w0, &idx, &values, None)?;
        assert_close(&fast, &slow, 1e-2, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-2, "dx")?;
        assert_close(gf.get(&values).unwrap(), gs.get(&values).unwrap(), 1e-5, "dvalues")?;
        Ok(())
    }

    #[test]
    fn ops_sparse_delta_linear_zero_values_is_base_linear() -> Result<()> {
        let idx = Arc::new(vec![0u32, 5, 11]);
        let x = rand_tensor(&[3, 4], 1)?;
        let w0 = rand_tensor(&[3, 4], 2)?;
        let zeros = Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu)?;
        let y = sparse_delta_linear(&x, &w0, &idx, &zeros, None)?;
        assert_close(&y, &x.matmul(&w0.t()?)?, 1e-6, "zero delta")
    }

    #[test]
    fn ops_sparse_delta_linear_rejects_bad_index() {
        let x = Tensor::zeros((2, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let v = Tensor::zeros(2, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let unsorted = Arc::new(vec![5u32, 2]);
        let err = sparse_delta_linear(&x, &w, &unsorted, &v, None).unwrap_err().to_string();
        assert!(err.contains("sorted"), "{err}");
        let outside = Arc::new(vec![2u32, 12]);
        let err = sparse_delta_linear(&x, &w, &outside, &v, None).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
    }
}

#[cfg(test)]
mod timing {
    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_sampled_dense_dense_timing() {
        let t = 4096;
        for (out_dim, in_dim) in [(384usize, 384usize), (1536, 384), (384, 1536)] {
            let idx = crate::sparse::random_mask(out_dim, in_dim, 0.01, 7);
            let g: Vec<f32> = (0..t * out_dim).map(|v| (v % 7) as f32 * 0.1).collect();
            let x: Vec<f32> = (0..t * in_dim).map(|v| (v % 5) as f32 * 0.1).collect();
            for tb in [32usize, 64, 128, 256, 512] {
                let mut best = f64::MAX;
                for _ in 0..7 {
                    let s = std::time::Instant::now();
                    let _ = super::sampled_dense_dense_blocks(&g, &x, t, out_dim, in_dim, &idx, tb);
                    best = best.min(s.elapsed().as_secs_f64());
                }
                println!("out {out_dim} in {in_dim} block {tb}: {:.2} ms", best * 1e3);
            }
        }
    }
}
