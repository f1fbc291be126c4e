//! Linear layers `y = x wᵀ + b` as single ops: through a frozen weight (backward computes only
//! dL/dx) and through a trainable one (dL/dx, dL/dw, dL/db in one backward).
//!
//! candle's matmul backward always computes the weight gradient too (one of the three GEMMs of a
//! training step's linear layer); for a frozen weight that work is thrown away. For a trainable
//! weight, one op replaces candle's matmul + transpose + broadcast-add nodes (and the extra
//! gradient buffers and additions each node costs in the backward).

use super::cpu::{check_f32_cpu, gemm_at, gemm_new_at, repeat_rows, slice, sum_in_order, tensor, with_f32, with_weight, MatView};
use crate::spec::Precision;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// `y[.., out] = x[.., in] · wᵀ + b` with `w: [out, in]` and `b: [out]` treated as constants
/// (no gradient flows to them, even if they are `Var`s). Leading dims of `x` are folded into
/// one GEMM.
pub fn frozen_linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    frozen_linear_at(x, w, b, Precision::Fp32)
}

/// [`frozen_linear`] with its GEMMs in `precision`.
pub fn frozen_linear_at(x: &Tensor, w: &Tensor, b: Option<&Tensor>, precision: Precision) -> Result<Tensor> {
    let op = FrozenLinear::new(x, w, b, "frozen_linear", precision)?;
    x.contiguous()?.apply_op1(op)
}

/// The same function composed from candle ops (reference for tests; its backward also computes
/// the weight gradient).
pub fn frozen_linear_slow(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (in_dim, out_dim) = (w.dim(1)?, w.dim(0)?);
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().unwrap() = out_dim;
    let y = x.reshape(((), in_dim))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    y.reshape(out_dims)
}

/// Validated shapes shared by the dense and sparse linear ops.
pub(crate) struct LinearShape {
    pub in_dim: usize,
    pub out_dim: usize,
    pub out_dims: Vec<usize>,
}

impl LinearShape {
    pub(crate) fn check(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: &str) -> Result<Self> {
        check_f32_cpu(x, op, "x")?;
        if w.dtype() != candle_core::DType::BF16 {
            // A frozen weight may be held in bf16 (mixed precision); every other operand is f32.
            check_f32_cpu(w, op, "weight")?;
        }
        let (out_dim, in_dim) = w.dims2().map_err(|_| candle_core::Error::Msg(format!("{op}: weight must be 2-D [out, in], got {:?}", w.dims())))?;
        if x.dim(D::Minus1)? != in_dim {
            bail!("{op}: input's last dim {} does not match weight [out={out_dim}, in={in_dim}]", x.dim(D::Minus1)?);
        }
        if let Some(b) = b {
            check_f32_cpu(b, op, "bias")?;
            if b.dims() != [out_dim] {
                bail!("{op}: bias {:?} must be [{out_dim}]", b.dims());
            }
        }
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().unwrap() = out_dim;
        Ok(Self { in_dim, out_dim, out_dims })
    }
}

/// `dst[t, :] = b` for every row, so a GEMM can accumulate onto it.
pub(crate) fn bias_rows(b: Option<&Tensor>, rows: usize, out_dim: usize, op: &str) -> Result<(Vec<f32>, bool)> {
    match b {
        Some(b) => {
            let dst = with_f32(b, op, |b| repeat_rows(b, rows))?;
            Ok((dst, true))
        }
        None => Ok((vec![0f32; rows * out_dim], false)),
    }
}

struct FrozenLinear {
    w: Tensor,
    b: Option<Tensor>,
    shape: LinearShape,
    precision: Precision,
}

/// Whether a gradient can flow into `x` (a variable or the result of a tracked op); when not
/// (e.g. the first layer's input in adapter modes), backward passes skip dL/dx.
pub(crate) fn wants_grad(x: &Tensor) -> bool {
    x.track_op()
}

impl FrozenLinear {
    fn new(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: &str, precision: Precision) -> Result<Self> {
        let shape = LinearShape::check(x, w, b, op)?;
        // Detached: the op owns constants, the graph never reaches them.
        let w = w.detach().contiguous()?;
        let b = b.map(|b| b.detach().contiguous()).transpose()?;
        Ok(Self { w, b, shape, precision })
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "slora-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "frozen_linear")?;
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let rows = x.len() / in_dim.max(1);
        let (mut y, has_bias) = bias_rows(self.b.as_ref(), rows, out_dim, "frozen_linear")?;
        with_weight(&self.w, "frozen_linear", |w| w.x_wt(self.precision, rows, out_dim, in_dim, &mut y, has_bias, x, None))?;
        Ok((CpuStorage::F32(y), Shape::from(self.shape.out_dims.clone())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !wants_grad(x) {
            return Ok(None);
        }
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let dx = with_f32(grad, "frozen_linear bwd", |g| {
            with_weight(&self.w, "frozen_linear bwd", |w| w.g_w(self.precision, g.len() / out_dim.max(1), in_dim, out_dim, g, None))
        })??;
        Ok(Some(tensor(dx, x.shape())?))
    }
}

/// `y[.., out] = x[.., in] · wᵀ + b` with gradients for `x`, `w` (`[out, in]`) and `b` (`[out]`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_at(x, w, b, Precision::Fp32)
}

/// [`linear`] with its GEMMs in `precision` (the weight and its gradient stay f32).
pub fn linear_at(x: &Tensor, w: &Tensor, b: Option<&Tensor>, precision: Precision) -> Result<Tensor> {
    let shape = LinearShape::check(x, w, b, "linear")?;
    let op = TrainableLinear { shape, precision };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

struct TrainableLinear {
    shape: LinearShape,
    precision: Precision,
}

impl TrainableLinear {
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (CpuStorage, Shape) {
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let rows = x.len() / in_dim.max(1);
        let mut y = match b {
            Some(b) => repeat_rows(b, rows),
            None => vec![0f32; rows * out_dim],
        };
        gemm_at(self.precision, rows, out_dim, in_dim, &mut y, b.is_some(), MatView::rows(x, in_dim), MatView::transposed(w, in_dim));
        (CpuStorage::F32(y), Shape::from(self.shape.out_dims.clone()))
    }

    /// (dx, dw, db) for upstream gradient `g` (dx only when `x` takes gradients).
    fn backward(&self, x: &Tensor, w: &Tensor, grad: &Tensor, with_bias: bool) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        const OP: &str = "linear bwd";
        let LinearShape { in_dim, out_dim, .. } = self.shape;
        let (dx, dw, db) = with_f32(grad, OP, |g| {
            with_f32(x, OP, |xs| {
                with_f32(w, OP, |ws| {
                    let rows = g.len() / out_dim.max(1);
                    let p = self.precision;
                    let dx = wants_grad(x).then(|| gemm_new_at(p, rows, in_dim, out_dim, MatView::rows(g, out_dim), MatView::rows(ws, in_dim)));
                    let dw = gemm_new_at(p, out_dim, in_dim, rows, MatView::transposed(g, out_dim), MatView::rows(xs, in_dim));
                    let db = with_bias.then(|| column_sums(g, out_dim));
                    (dx, dw, db)
                })
            })
        })???;
        let db = db.map(|db| tensor(db, out_dim)).transpose()?;
        let dx = dx.map(|dx| tensor(dx, x.shape())).transpose()?;
        Ok((dx, tensor(dw, (out_dim, in_dim))?, db))
    }
}

/// Sums of the columns of a row-major matrix with `cols` columns, in fixed row blocks summed in
/// order (deterministic whatever the thread count).
pub(crate) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    const BLOCK_ROWS: usize = 256;
    let partials: Vec<Vec<f32>> = m
        .par_chunks(BLOCK_ROWS * cols)
        .map(|block| {
            let mut acc = vec![0f32; cols];
            for row in block.chunks_exact(cols) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc
        })
        .collect();
    sum_in_order(partials, cols)
}

impl CustomOp2 for TrainableLinear {
    fn name(&self) -> &'static str {
        "slora-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok(self.forward(slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, None))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, grad, false)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for TrainableLinear {
    fn name(&self) -> &'static str {
        "slora-linear"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok(self.forward(slice(s1, l1, "linear")?, slice(s2, l2, "linear")?, Some(slice(s3, l3, "linear")?)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.backward(x, w, grad, true)?;
        Ok((dx, Some(dw), db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::Var;

    #[test]
    fn ops_frozen_linear_matches_matmul_and_gives_only_dx() -> Result<()> {
        let x = Var::from_tensor(&rand_tensor(&[4, 32, 384], 31)?)?;
        let w = Var::from_tensor(&(rand_tensor(&[1536, 384], 32)? * 0.05)?)?;
        let b = Var::from_tensor(&rand_tensor(&[1536], 33)?)?;
        let upstream = rand_tensor(&[4, 32, 1536], 34)?;
        for bias in [Some(b.as_tensor()), None] {
            let fast = frozen_linear(&x, &w, bias)?;
            let slow = frozen_linear_slow(&x, &w, bias)?;
            assert_eq!(fast.dims(), &[4, 32, 1536]);
            assert_close(&fast, &slow, 1e-5, "forward")?;
            let gf = (fast * &upstream)?.sum_all()?.backward()?;
            let gs = (slow * &upstream)?.sum_all()?.backward()?;
            assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5, "dx")?;
            assert!(gf.get(&w).is_none(), "frozen weight gets no gradient");
            assert!(gf.get(&b).is_none(), "frozen bias gets no gradient");
            assert!(gs.get(&w).is_some(), "candle's matmul computes it (the work we skip)");
        }
        Ok(())
    }

    #[test]
    fn ops_linear_matches_matmul_with_all_gradients() -> Result<()> {
        let x = Var::from_tensor(&rand_tensor(&[4, 32, 384], 35)?)?;
        let w = Var::from_tensor(&(rand_tensor(&[1536, 384], 36)? * 0.05)?)?;
        let b = Var::from_tensor(&rand_tensor(&[1536], 37)?)?;
        let upstream = rand_tensor(&[4, 32, 1536], 38)?;
        for bias in [Some(b.as_tensor()), None] {
            let fast = linear(&x, &w, bias)?;
            let slow = {
                let y = x.reshape((128, 384))?.matmul(&w.t()?)?;
                let y = match bias { Some(b) => y.broadcast_add(b)?, None => y };
                y.reshape((4, 32, 1536))?
            };
            assert_close(&fast, &slow, 1e-5, "forward")?;
            let gf = (fast * &upstream)?.sum_all()?.backward()?;
            let gs = (slow * &upstream)?.sum_all()?.backward()?;
            assert_close(gf.get(&x).unwrap(), gs.get(&x).unwrap(), 1e-5, "dx")?;
            assert_close(gf.get(&w).unwrap(), gs.get(&w).unwrap(), 1e-5, "dw")?;
            match bias {
                Some(_) => assert_close(gf.get(&b).unwrap(), gs.get(&b).unwrap(), 1e-5, "db")?,
                None => assert!(gf.get(&b).is_none()),
            }
        }
        Ok(())
    }

    #[test]
    fn ops_frozen_linear_rejects_mismatched_input() {
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let err = frozen_linear(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("does not match weight"), "{err}");
    }
}
