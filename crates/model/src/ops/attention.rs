//! Fused multi-head scaled-dot-product attention with hand-written backward.
//!
//! Works on the projections as the linears produce them, `[B, T, heads · d]`, reading each head
//! through strides: no split/transpose copies, no `[B, heads, T, T]` score tensors in memory. Each
//! (batch, head) pair runs `S = QKᵀ/√d + mask`, softmax, optional dropout and `PV` on one thread
//! with single-threaded GEMMs (pairs run in parallel). When a backward will follow and
//! `B · heads · T²` floats fit in [`KEEP_PROBS_BYTES`], the forward keeps `P` for it; otherwise the
//! backward recomputes `P` per pair. The dropout mask is kept as bits.

use super::cpu::{check_f32_cpu, gemm_raw, slice, tensor, uninit_f32, with_f32, MatView, SharedMut};
use super::gemm_args::GemmArgs;
use super::math::{self, simd_dispatch};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use super::dropout::{apply_keep, draw_keep_bits, keep_threshold};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::OnceLock;
use crate::spec::Precision;

/// Largest probability tensor (per attention call) the forward keeps for the backward: 32 × 12
/// heads × 128² floats are 25 MB; at 512 tokens the same batch would need 400 MB per layer, and the
/// backward recomputes instead (one small GEMM and a softmax per pair).
pub const KEEP_PROBS_BYTES: usize = 64 << 20;

/// Attention dropout: probability and seed (the mask is a function of seed, batch row and head).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    /// Probability of dropping an attention weight.
    pub p: f32,
    /// Seed of the mask.
    pub seed: u64,
}

/// `softmax(Q Kᵀ / √d + mask) V` per head, with `q`, `k`, `v`: `[B, T, heads · d]` and the result
/// in the same layout. `mask_bias` holds one additive value per key (`B · T` elements, e.g.
/// `[B, 1, 1, T]`: 0 for tokens, a large negative number for padding), treated as a constant.
/// Gradients flow to q, k and v.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask_bias: Option<&Tensor>, heads: usize, dropout: Option<AttentionDropout>) -> Result<Tensor> {
    attention_keeping(q, k, v, mask_bias, heads, dropout, KEEP_PROBS_BYTES)
}

/// [`attention`] keeping `P` for the backward up to `keep_probs_bytes`.
fn attention_keeping(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: Option<&Tensor>,
    heads: usize,
    dropout: Option<AttentionDropout>,
    keep_probs_bytes: usize,
) -> Result<Tensor> {
    const OP: &str = "attention";
    for (t, what) in [(q, "q"), (k, "k"), (v, "v")] {
        check_f32_cpu(t, OP, what)?;
    }
    let (b, t, hidden) = q.dims3()?;
    if k.dims() != q.dims() || v.dims() != q.dims() {
        bail!("{OP}: q {:?}, k {:?} and v {:?} must have the same shape", q.dims(), k.dims(), v.dims());
    }
    if heads == 0 || hidden % heads != 0 {
        bail!("{OP}: hidden size {hidden} is not a multiple of {heads} heads");
    }
    let bias = match mask_bias {
        Some(m) => {
            if m.elem_count() != b * t {
                bail!("{OP}: mask has {} values, expected batch {b} x keys {t}", m.elem_count());
            }
            Some(with_f32(&m.to_dtype(candle_core::DType::F32)?, OP, |m| m.to_vec())?)
        }
        None => None,
    };
    if let Some(d) = dropout {
        if !(0.0..1.0).contains(&d.p) {
            bail!("{OP}: dropout probability {} is outside [0, 1)", d.p);
        }
    }
    let dropout = dropout.filter(|d| d.p > 0.0);
    let backward_follows = q.track_op() || k.track_op() || v.track_op();
    let keep_probs = backward_follows && b * heads * t * t * std::mem::size_of::<f32>() <= keep_probs_bytes;
    let op = Attention { batch: b, seq: t, heads, head_dim: hidden / heads, bias, dropout, mask: OnceLock::new(), keep_probs, probs: Default::default() };
    q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The same function composed from candle ops (reference for tests), as transformers' eager
/// attention computes it. `keep` is an optional `[B, heads, T, T]` 0/1 dropout mask.
pub fn attention_slow(q: &Tensor, k: &Tensor, v: &Tensor, mask_bias: Option<&Tensor>, heads: usize, keep: Option<(&Tensor, f32)>) -> Result<Tensor> {
    let (b, t, hidden) = q.dims3()?;
    let d = hidden / heads;
    let split = |x: &Tensor| x.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous();
    let (qh, kh, vh) = (split(q)?, split(k)?, split(v)?);
    let mut scores = (qh.matmul(&kh.transpose(2, 3)?.contiguous()?)? / (d as f64).sqrt())?;
    if let Some(m) = mask_bias {
        scores = scores.broadcast_add(&m.reshape((b, 1, 1, t))?)?;
    }
    let mut probs = super::softmax_last_dim_slow(&scores)?;
    if let Some((keep, p)) = keep {
        probs = ((probs * keep)? / (1.0 - p as f64))?;
    }
    probs.matmul(&vh)?.transpose(1, 2)?.reshape((b, t, hidden))
}

struct Attention {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    bias: Option<Vec<f32>>,
    dropout: Option<AttentionDropout>,
    /// Dropout keep-bits, `words_per_pair` per (batch, head) pair; drawn by the forward.
    mask: OnceLock<Vec<u64>>,
    /// Whether the forward keeps `P` (all pairs, `T × T` each) for the backward, in `probs`.
    keep_probs: bool,
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

/// Row-wise `softmax(s + bias)` in place over rows of `cols`.
#[inline(always)]
fn softmax_bias_rows_inner(s: &mut [f32], bias: &[f32], cols: usize) {
    for row in s.chunks_exact_mut(cols) {
        if !bias.is_empty() {
            for (x, b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
        let m = math::max(row);
        for x in row.iter_mut() {
            *x = math::exp(*x - m);
        }
        let inv = 1.0 / math::sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}
simd_dispatch!(fn softmax_bias_rows(s: &mut [f32], bias: &[f32], cols: usize) => softmax_bias_rows_inner);

/// `ds = p · (dp − Σ_j dp·p)` in place in `dp`, rows of `cols`.
#[inline(always)]
fn softmax_backward_rows_inner(p: &[f32], dp: &mut [f32], cols: usize) {
    for (pr, dr) in p.chunks_exact(cols).zip(dp.chunks_exact_mut(cols)) {
        let s = math::dot(pr, dr);
        for i in 0..cols {
            dr[i] = pr[i] * (dr[i] - s);
        }
    }
}
simd_dispatch!(fn softmax_backward_rows(p: &[f32], dp: &mut [f32], cols: usize) => softmax_backward_rows_inner);

/// One head of a `[B, T, heads · d]` tensor as a `T × d` view starting at `base`.
fn head_view(x: &[f32], base: usize, hidden: usize) -> MatView<'_> {
    MatView { data: &x[base..], rs: hidden, cs: 1 }
}

/// The transpose (`d × T`) of [`head_view`].
fn head_view_t(x: &[f32], base: usize, hidden: usize) -> MatView<'_> {
    MatView { data: &x[base..], rs: 1, cs: hidden }
}

impl Attention {
    fn words_per_pair(&self) -> usize {
        (self.seq * self.seq).div_ceil(64)
    }

    fn pairs(&self) -> usize {
        self.batch * self.heads
    }

    /// Keep-bits of every pair: ChaCha8 from the seed, stream = pair index.
    fn draw_mask(&self) -> Vec<u64> {
        let Some(d) = self.dropout else { return Vec::new() };
        let threshold = keep_threshold(d.p);
        let wpp = self.words_per_pair();
        let mut bits = vec![0u64; wpp * self.pairs()];
        bits.par_chunks_mut(wpp).enumerate().for_each(|(pair, words)| {
            let mut rng = ChaCha8Rng::seed_from_u64(d.seed);
            rng.set_stream(pair as u64);
            draw_keep_bits(&mut rng, words, self.seq * self.seq, threshold);
        });
        bits
    }

    /// Probabilities `P` of one pair into `s` (`T × T`).
    fn probs(&self, pair: usize, q: &[f32], k: &[f32], s: &mut [f32]) {
        let (t, d, hidden) = (self.seq, self.head_dim, self.heads * self.head_dim);
        let (b, h) = (pair / self.heads, pair % self.heads);
        let base = b * t * hidden + h * d;
        let qv = MatView { data: &q[base..], rs: hidden, cs: 1 };
        let kt = MatView { data: &k[base..], rs: 1, cs: hidden };
        let scale = 1.0 / (d as f32).sqrt();
        let qkt = GemmArgs { m: t, n: t, k: d, dst: s.as_mut_ptr(), dst_rs: t, dst_cs: 1, accumulate: false, scale, lhs: qv, rhs: kt, parallel: false };
        // SAFETY: s is a private T×T buffer.
        unsafe { gemm_raw(Precision::Fp32, qkt) };
        let bias = self.bias.as_ref().map_or(&[][..], |m| &m[b * t..(b + 1) * t]);
        softmax_bias_rows(s, bias, t);
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "slora-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(s1, l1, "attention")?, slice(s2, l2, "attention")?, slice(s3, l3, "attention")?);
        let (t, d, hidden) = (self.seq, self.head_dim, self.heads * self.head_dim);
        let mask = self.mask.get_or_init(|| self.draw_mask());
        let wpp = self.words_per_pair();
        let keep_scale = self.dropout.map_or(1.0, |dr| 1.0 / (1.0 - dr.p));
        // SAFETY: the pairs' PV GEMMs (not accumulating) together write every element.
        let mut out = unsafe { uninit_f32(q.len()) };
        let out_ptr = SharedMut(out.as_mut_ptr());
        let mut kept: Vec<f32> = if self.keep_probs { Vec::with_capacity(self.pairs() * t * t) } else { Vec::new() };
        let kept_ptr = SharedMut(kept.as_mut_ptr());
        (0..self.pairs()).into_par_iter().for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(scratch, dropped), pair| {
                let s: &mut [f32] = if self.keep_probs {
                    // SAFETY: pair owns elements pair·T²..(pair+1)·T² of kept's allocation, and
                    // probs() writes every one of them before anything reads it.
                    unsafe { std::slice::from_raw_parts_mut(kept_ptr.ptr().add(pair * t * t), t * t) }
                } else {
                    scratch
                };
                self.probs(pair, q, k, s);
                let p: &[f32] = if self.dropout.is_some() {
                    apply_keep(s, &mask[pair * wpp..(pair + 1) * wpp], keep_scale, dropped);
                    dropped
                } else {
                    s
                };
                let (b, h) = (pair / self.heads, pair % self.heads);
                let base = b * t * hidden + h * d;
                let vv = MatView { data: &v[base..], rs: hidden, cs: 1 };
                // SAFETY: pair (b, h) alone writes rows b·T..(b+1)·T, columns h·d..(h+1)·d of out.
                unsafe {
                    let dst = out_ptr.ptr().add(base);
                    gemm_raw(Precision::Fp32, GemmArgs { m: t, n: d, k: t, dst, dst_rs: hidden, dst_cs: 1, accumulate: false, scale: 1.0, lhs: MatView::rows(p, t), rhs: vv, parallel: false });
                }
            },
        );
        if self.keep_probs {
            // SAFETY: the loop above wrote all pairs · T² elements.
            unsafe { kept.set_len(self.pairs() * t * t) };
            *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, q: &Tensor, k: &Tensor, v: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        const OP: &str = "attention bwd";
        let (t, d, hidden) = (self.seq, self.head_dim, self.heads * self.head_dim);
        let wpp = self.words_per_pair();
        let keep_scale = self.dropout.map_or(1.0, |dr| 1.0 / (1.0 - dr.p));
        let scale = 1.0 / (d as f32).sqrt();
        let mask = self.mask.get_or_init(|| self.draw_mask());
        let n = q.elem_count();
        // SAFETY: each pair's dQ, dK, dV GEMMs (not accumulating) write its block of all three;
        // the pairs cover every element.
        let (mut dq, mut dk, mut dv) = unsafe { (uninit_f32(n), uninit_f32(n), uninit_f32(n)) };
        let ptrs = (SharedMut(dq.as_mut_ptr()), SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
        let kept = self.probs.lock().unwrap_or_else(|e| e.into_inner()).take().filter(|p| p.len() == self.pairs() * t * t);
        with_f32(q, OP, |q| {
            with_f32(k, OP, |k| {
                with_f32(v, OP, |v| {
                    with_f32(grad, OP, |g| {
                        (0..self.pairs()).into_par_iter().for_each_init(
                            || (vec![0f32; t * t], vec![0f32; t * t], vec![0f32; t * t]),
                            |(scratch, dp, dropped), pair| {
                                let (dq_ptr, dk_ptr, dv_ptr) = ptrs;
                                let p: &[f32] = match &kept {
                                    Some(kept) => &kept[pair * t * t..(pair + 1) * t * t],
                                    None => {
                                        self.probs(pair, q, k, scratch);
                                        scratch
                                    }
                                };
                                let bits = &mask[(pair * wpp).min(mask.len())..((pair + 1) * wpp).min(mask.len())];
                                let pd: &[f32] = if self.dropout.is_some() {
                                    apply_keep(p, bits, keep_scale, dropped);
                                    dropped
                                } else {
                                    p
                                };
                                let (b, h) = (pair / self.heads, pair % self.heads);
                                let base = b * t * hidden + h * d;
                                let view = |x| head_view(x, base, hidden);
                                let view_t = |x| head_view_t(x, base, hidden);
                                // SAFETY: each pair writes only its own (rows of b, columns of h)
                                // block of dq, dk, dv; p/dp/dropped are private buffers.
                                unsafe {
                                    // dV = Pdᵀ dO
                                    let (lhs, rhs) = (MatView::transposed(pd, t), view(g));
                                    gemm_raw(Precision::Fp32, GemmArgs { m: t, n: d, k: t, dst: dv_ptr.ptr().add(base), dst_rs: hidden, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs, parallel: false });
                                    // dPd = dO Vᵀ
                                    let (lhs, rhs) = (view(g), view_t(v));
                                    gemm_raw(Precision::Fp32, GemmArgs { m: t, n: t, k: d, dst: dp.as_mut_ptr(), dst_rs: t, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs, parallel: false });
                                }
                                if self.dropout.is_some() {
                                    dropped.copy_from_slice(dp);
                                    apply_keep(dropped, bits, keep_scale, dp);
                                }
                                softmax_backward_rows(p, dp, t);
                                unsafe {
                                    // dQ = dS K / √d ; dK = dSᵀ Q / √d
                                    let (lhs, rhs) = (MatView::rows(dp, t), view(k));
                                    gemm_raw(Precision::Fp32, GemmArgs { m: t, n: d, k: t, dst: dq_ptr.ptr().add(base), dst_rs: hidden, dst_cs: 1, accumulate: false, scale, lhs, rhs, parallel: false });
                                    let (lhs, rhs) = (MatView::transposed(dp, t), view(q));
                                    gemm_raw(Precision::Fp32, GemmArgs { m: t, n: d, k: t, dst: dk_ptr.ptr().add(base), dst_rs: hidden, dst_cs: 1, accumulate: false, scale, lhs, rhs, parallel: false });
                                }
                            },
                        )
                    })
                })
            })
        })????;
        let shape = q.shape();
        Ok((Some(tensor(dq, shape)?), Some(tensor(dk, shape)?), Some(tensor(dv, shape)?)))
    }
}

/// The keep-mask the fused op draws, as a `[B, heads, T, T]` 0/1 tensor (for tests).
#[cfg(test)]
pub(crate) fn dropout_keep_mask(batch: usize, heads: usize, seq: usize, dropout: AttentionDropout) -> Result<Tensor> {
    let op = Attention { batch, seq, heads, head_dim: 1, bias: None, dropout: Some(dropout), mask: OnceLock::new(), keep_probs: false, probs: Default::default() };
    let bits = op.draw_mask();
    let wpp = op.words_per_pair();
    let mut keep = Vec::with_capacity(batch * heads * seq * seq);
    for pair in 0..batch * heads {
        for i in 0..seq * seq {
            keep.push(((bits[pair * wpp + i / 64] >> (i % 64)) & 1) as f32);
        }
    }
    tensor(keep, (batch, heads, seq, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, rand_tensor};
    use candle_core::{Device, Var};

    fn padding_bias(batch: usize, seq: usize) -> Result<Tensor> {
        // Row b keeps its first seq - 3b tokens.
        let mut m = vec![0f32; batch * seq];
        for b in 0..batch {
            for j in seq.saturating_sub(3 * b)..seq {
                m[b * seq + j] = f32::MIN;
            }
        }
        Tensor::from_vec(m, (batch, 1, 1, seq), &Device::Cpu)
    }

    #[test]
    fn ops_attention_matches_composed_with_padding() -> Result<()> {
        let (b, t, heads, d) = (4, 32, 12, 32);
        let q = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 61)?)?;
        let k = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 62)?)?;
        let v = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 63)?)?;
        let bias = padding_bias(b, t)?;
        let upstream = rand_tensor(&[b, t, heads * d], 64)?;
        let fast = attention(&q, &k, &v, Some(&bias), heads, None)?;
        let slow = attention_slow(&q, &k, &v, Some(&bias), heads, None)?;
        assert_close(&fast, &slow, 1e-5, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        for (x, name) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            assert_close(gf.get(x).unwrap(), gs.get(x).unwrap(), 1e-5, name)?;
        }
        // Over the memory budget the backward recomputes P: the same numbers, bit for bit.
        let recomputed = attention_keeping(&q, &k, &v, Some(&bias), heads, None, 0)?;
        let gr = (recomputed * &upstream)?.sum_all()?.backward()?;
        for (x, name) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            let (kept, again) = (gf.get(x).unwrap().flatten_all()?.to_vec1::<f32>()?, gr.get(x).unwrap().flatten_all()?.to_vec1::<f32>()?);
            assert_eq!(kept, again, "{name}: kept and recomputed probabilities differ");
        }
        Ok(())
    }

    #[test]
    fn ops_attention_dropout_matches_composed_with_same_mask() -> Result<()> {
        let (b, t, heads, d) = (2, 24, 4, 16);
        let q = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 71)?)?;
        let k = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 72)?)?;
        let v = Var::from_tensor(&rand_tensor(&[b, t, heads * d], 73)?)?;
        let drop = AttentionDropout { p: 0.1, seed: 5 };
        let keep = dropout_keep_mask(b, heads, t, drop)?;
        let kept = keep.mean_all()?.to_scalar::<f32>()?;
        assert!((kept - 0.9).abs() < 0.02, "kept fraction {kept}");
        let upstream = rand_tensor(&[b, t, heads * d], 74)?;
        let fast = attention(&q, &k, &v, None, heads, Some(drop))?;
        let slow = attention_slow(&q, &k, &v, None, heads, Some((&keep, 0.1)))?;
        assert_close(&fast, &slow, 1e-5, "forward")?;
        let gf = (fast * &upstream)?.sum_all()?.backward()?;
        let gs = (slow * &upstream)?.sum_all()?.backward()?;
        for (x, name) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            assert_close(gf.get(x).unwrap(), gs.get(x).unwrap(), 1e-5, name)?;
        }
        let again = attention(&q, &k, &v, None, heads, Some(drop))?;
        assert_close(&again, &attention(&q, &k, &v, None, heads, Some(drop))?, 0.0, "same seed")?;
        Ok(())
    }

    #[test]
    fn ops_attention_rejects_bad_heads() {
        let x = Tensor::zeros((1, 4, 10), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = attention(&x, &x, &x, None, 3, None).unwrap_err().to_string();
        assert!(err.contains("multiple of 3 heads"), "{err}");
    }
}
