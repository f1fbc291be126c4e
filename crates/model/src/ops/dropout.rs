//! Seeded dropout: `x * mask / (1 - p)` with the mask a pure function of (seed, element index).
//!
//! candle-nn's Dropout draws from an unseeded RNG, so runs are not reproducible. Here each block of
//! `CHUNK` elements draws from ChaCha8 seeded by `seed` on stream = block number, so the mask does
//! not depend on the thread count. The forward keeps the mask as bits for the backward.

use super::cpu::{check_f32_cpu, slice, tensor, with_f32};
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
        if self.p >= 1.0 {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }

    /// The keep-mask for `n` elements, one bit each.
    fn draw_mask(&self, n: usize) -> Vec<u64> {
        // Keep when a uniform u32 is at or above p · 2^32 (exact for every p representable in f32).
        let threshold = (self.p as f64 * 4_294_967_296.0).round() as u64;
        let mut words = vec![0u64; n.div_ceil(64)];
        words.par_chunks_mut(CHUNK / 64).enumerate().for_each(|(block, words)| {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(block as u64);
            let start = block * CHUNK;
            let len = CHUNK.min(n - start);
            // Whole ChaCha blocks at a time (per-call `next_u32` costs more than the cipher).
            let mut draws = [0u32; 64];
            for (w, word) in words.iter_mut().enumerate() {
                let take = 64.min(len.saturating_sub(w * 64));
                if take == 0 {
                    break;
                }
                rng.fill(&mut draws[..]);
                let mut bits = 0u64;
                for (i, &d) in draws[..take].iter().enumerate() {
                    bits |= ((d as u64 >= threshold) as u64) << i;
                }
                *word = bits;
            }
        });
        words
    }
}

/// `out[i] = src[i] * scale` where the mask bit is set, else 0.
fn apply_mask(src: &[f32], mask: &[u64], scale: f32) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(block, out)| {
        let src = &src[block * CHUNK..block * CHUNK + out.len()];
        let words = &mask[block * CHUNK / 64..];
        for ((o, s), &word) in out.chunks_mut(64).zip(src.chunks(64)).zip(words) {
            for (j, (o, &s)) in o.iter_mut().zip(s).enumerate() {
                *o = s * scale * ((word >> j) & 1) as f32;
            }
        }
    });
    out
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
