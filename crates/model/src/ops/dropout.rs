//! Seeded dropout: `x * mask / (1 - p)` with the mask a pure function of (seed, element index).
//!
//! candle-nn's Dropout draws from an unseeded RNG, so runs are not reproducible. Here each block of
//! `CHUNK` elements draws from ChaCha8 seeded by `seed` on stream = block number, so the mask does
//! not depend on the thread count. The forward keeps the mask as bits for the backward.

use super::cpu::{check_f32_cpu, par_rows_new, slice, tensor, with_f32};
use super::math::simd_dispatch;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Elements per RNG stream (a multiple of 64: one mask word never straddles two blocks).
const CHUNK: usize = 16 * 1024;

/// Zeroes each element with probability `p` (from `seed`) and scales the rest by `1 / (1 - p)`.
/// `p = 0` returns `x` unchanged; `p = 1` returns zeros. Gradients flow to `x` through the mask.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        bail!("dropout: probability {p} is outside [0, 1]");
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    check_f32_cpu(x, "dropout", "x")?;
    x.contiguous()?.apply_op1(Dropout { p, seed, mask: OnceLock::new() })
}

struct Dropout {
    p: f32,
    seed: u64,
    /// Bit i set = element i kept; written by the forward, read by the backward.
    mask: OnceLock<Vec<u64>>,
}

impl Dropout {
    fn scale(&self) -> f32 {
        keep_scale(self.p)
    }

    fn draw_mask(&self, n: usize) -> Vec<u64> {
        keep_mask(n, self.p, self.seed)
    }
}

/// `1 / (1 - p)`, or 0 when everything is dropped.
pub(crate) fn keep_scale(p: f32) -> f32 {
    if p >= 1.0 {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// Keep when a uniform u32 is at or above this (exact for every p representable in f32).
pub(crate) fn keep_threshold(p: f32) -> u64 {
    (p as f64 * 4_294_967_296.0).round() as u64
}

/// Fills `words` with keep-bits for `n` elements from `rng`, one u32 draw per element (a word
/// always consumes 64 draws, also the last, partial one).
pub(crate) fn draw_keep_bits(rng: &mut ChaCha8Rng, words: &mut [u64], n: usize, threshold: u64) {
    // Whole ChaCha blocks at a time (per-call `next_u32` costs more than the cipher).
    let mut draws = [0u32; 64];
    for (w, word) in words.iter_mut().enumerate() {
        let take = 64.min(n.saturating_sub(w * 64));
        if take == 0 {
            break;
        }
        rng.fill(&mut draws[..]);
        let bits = pack_keep(&draws, threshold);
        *word = if take == 64 { bits } else { bits & ((1u64 << take) - 1) };
    }
}

/// Bit i set when `draws[i] >= threshold`. Eight lanes per byte with no data-dependent shifts,
/// so the compares vectorise and each byte is one mask extraction.
#[inline(always)]
fn pack_keep_inner(draws: &[u32; 64], threshold: u64) -> u64 {
    if threshold > u32::MAX as u64 {
        return 0;
    }
    let t = threshold as u32;
    let mut bits = 0u64;
    for (j, lanes) in draws.chunks_exact(8).enumerate() {
        let mut byte = 0u64;
        for (i, &d) in lanes.iter().enumerate() {
            byte |= ((d >= t) as u64) << i;
        }
        bits |= byte << (8 * j);
    }
    bits
}
simd_dispatch!(fn pack_keep(draws: &[u32; 64], threshold: u64) -> u64 => pack_keep_inner);

/// The keep-mask of `n` elements for (`p`, `seed`), one bit each: block b of `CHUNK` elements
/// draws from ChaCha8(seed) on stream b.
pub(crate) fn keep_mask(n: usize, p: f32, seed: u64) -> Vec<u64> {
    let threshold = keep_threshold(p);
    let mut words = vec![0u64; n.div_ceil(64)];
    words.par_chunks_mut(CHUNK / 64).enumerate().for_each(|(block, words)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(block as u64);
        draw_keep_bits(&mut rng, words, CHUNK.min(n - block * CHUNK), threshold);
    });
    words
}

/// 0/1 floats of each byte's bits, so applying a mask is a vectorised multiply.
static KEEP_TABLE: [[f32; 8]; 256] = {
    let mut t = [[0f32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            if (b >> j) & 1 == 1 {
                t[b][j] = 1.0;
            }
            j += 1;
        }
        b += 1;
    }
    t
};

#[inline(always)]
fn apply_keep_inner(x: &[f32], bits: &[u64], scale: f32, out: &mut [f32]) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    let bytes = bits.iter().flat_map(|w| w.to_le_bytes());
    let mut xs = x.chunks_exact(8);
    let mut os = out.chunks_exact_mut(8);
    let mut bytes_left = bytes;
    for (o, v) in (&mut os).zip(&mut xs) {
        let m = &KEEP_TABLE[bytes_left.next().unwrap_or(0) as usize];
        for j in 0..8 {
            o[j] = v[j] * m[j] * scale;
        }
    }
    let m = &KEEP_TABLE[bytes_left.next().unwrap_or(0) as usize];
    for ((o, v), k) in os.into_remainder().iter_mut().zip(xs.remainder()).zip(m) {
        *o = v * k * scale;
    }
}
simd_dispatch!(
    /// `out[i] = x[i] · keep_i · scale` with `keep_i` bit i of `bits`.
    fn apply_keep(x: &[f32], bits: &[u64], scale: f32, out: &mut [f32]) => apply_keep_inner
);

/// `out[i] = src[i] * scale` where the mask bit is set, else 0.
fn apply_mask(src: &[f32], mask: &[u64], scale: f32) -> Vec<f32> {
    par_rows_new(src.len(), CHUNK, |block, out| {
        let src = &src[block * CHUNK..block * CHUNK + out.len()];
        apply_keep(src, &mask[block * CHUNK / 64..], scale, out);
    })
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "slora-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "dropout")?;
        let mask = self.mask.get_or_init(|| self.draw_mask(x.len()));
        Ok((CpuStorage::F32(apply_mask(x, mask, self.scale())), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let n = x.elem_count();
        let mask = self.mask.get_or_init(|| self.draw_mask(n));
        let dx = with_f32(grad, "dropout bwd", |g| apply_mask(g, mask, self.scale()))?;
        Ok(Some(tensor(dx, x.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::rand_tensor;
    use candle_core::Var;

    #[test]
    fn ops_dropout_is_seeded_scaled_and_differentiable() -> Result<()> {
        let x = Var::from_tensor(&rand_tensor(&[4, 32, 384], 51)?.abs()?.affine(1.0, 0.1)?)?;
        let p = 0.1f32;
        let a = dropout(&x, p, 99)?;
        let b = dropout(&x, p, 99)?;
        let c = dropout(&x, p, 100)?;
        let (av, bv, cv) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?, c.flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(av, bv, "same seed, same mask");
        assert_ne!(av, cv, "another seed, another mask");
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        let dropped = av.iter().filter(|&&v| v == 0.0).count() as f64 / av.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "dropped fraction {dropped}");
        for (y, x) in av.iter().zip(&xv) {
            assert!(*y == 0.0 || (y - x / 0.9).abs() <= 1e-6 * x.abs().max(1.0));
        }
        // d(sum(y * u))/dx = u * mask / (1 - p): zero exactly where y is.
        let u = rand_tensor(&[4, 32, 384], 52)?;
        let g = (a * &u)?.sum_all()?.backward()?;
        let gx = g.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        let uv = u.flatten_all()?.to_vec1::<f32>()?;
        for i in 0..gx.len() {
            let want = if av[i] == 0.0 { 0.0 } else { uv[i] / 0.9 };
            assert!((gx[i] - want).abs() <= 1e-6 * want.abs().max(1.0), "grad {i}");
        }
        // The mask does not depend on the thread count: compare with a one-thread pool.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let single = pool.install(|| dropout(&x, p, 99))?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(single, av);
        Ok(())
    }

    #[test]
    fn ops_dropout_edge_probabilities() -> Result<()> {
        let x = rand_tensor(&[10], 1)?;
        assert_eq!(dropout(&x, 0.0, 1)?.to_vec1::<f32>()?, x.to_vec1::<f32>()?);
        assert_eq!(dropout(&x, 1.0, 1)?.to_vec1::<f32>()?, vec![0f32; 10]);
        assert!(dropout(&x, 1.5, 1).unwrap_err().to_string().contains("outside [0, 1]"));
        Ok(())
    }
}

#[cfg(test)]
mod timing {
    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_dropout_mask_timing() {
        let n = 32 * 12 * 128 * 128;
        let mut best = f64::MAX;
        let mut ones = 0;
        for _ in 0..10 {
            let s = std::time::Instant::now();
            let m = super::keep_mask(n, 0.1, 7);
            best = best.min(s.elapsed().as_secs_f64());
            ones = m.iter().map(|w| w.count_ones() as usize).sum::<usize>();
        }
        println!("keep_mask {n}: {:.2} ms ({:.2} ns/element, {} threads), kept {:.4}", best * 1e3, best * 1e9 / n as f64, rayon::current_num_threads(), ones as f64 / n as f64);
    }
}
