//! Branch-free f32 exp / erf / tanh that LLVM vectorises, and the AVX2 dispatch for row kernels.
//!
//! The build targets baseline x86-64 (SSE2), so hot loops are compiled a second time with AVX2+FMA
//! and picked at run time. `exp` is Cephes' expf (≤ 2 ulp on the clamped range); `erf` is
//! Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7), the same formula PyTorch's vectorised erf uses.

/// Defines `pub(crate) fn $name(args)` running `$inner(args)` compiled for AVX2+FMA when the CPU
/// has them, else the baseline build. `$inner` must be `#[inline(always)]` so it is recompiled.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $inner:path) => {
        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports the features `avx2` was compiled with.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in few bits and the rest, so `x - n ln2` stays exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a `round` call.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x; returns exactly 0 below -87.3 (so masked logits vanish) and saturates above 88.3.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    let n = (xc * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n without a float->int cast (saturating casts and overflow checks block vectorisation):
    // n + 2^23 + 127 holds n + 127 in its low mantissa bits; shifting them into the exponent.
    let scale = f32::from_bits((n + 8_388_735.0).to_bits() << 23);
    if x < -87.3 {
        0.0
    } else {
        y * scale
    }
}

/// erf(x) (Abramowitz–Stegun 7.1.26).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    erf_with_gauss(x, exp(-x * x))
}

/// erf(x) given `gauss = e^{-x²}` (which a caller that also needs the Gaussian density has already).
#[inline(always)]
pub(crate) fn erf_with_gauss(x: f32, gauss: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4_f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * gauss;
    y.copysign(x)
}

/// tanh(x) = 1 - 2 / (e^{2|x|} + 1), sign restored; absolute error ~1e-7.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let e = exp(2.0 * x.abs().min(20.0));
    (1.0 - 2.0 / (e + 1.0)).copysign(x)
}

/// Sum with eight independent accumulators, so the loop vectorises.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &x in tail {
        s += x;
    }
    s
}

/// Dot product with eight independent accumulators.
#[inline(always)]
pub(crate) fn dot(xs: &[f32], ys: &[f32]) -> f32 {
    let n = xs.len().min(ys.len());
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let mut acc = [0f32; 8];
    let xc = xs.chunks_exact(8);
    let yc = ys.chunks_exact(8);
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (a, b) in xt.iter().zip(yt) {
        s += a * b;
    }
    s
}

/// Maximum with eight independent lanes (NaN-unaware, like a plain `>` fold).
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(tail) {
        m = if x > m { x } else { m };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn math_exp_erf_tanh_match_libm() {
        let mut worst = [0f64; 3];
        for i in -40_000..40_000 {
            let x = i as f32 * 2.5e-3;
            if x.abs() < 87.0 {
                let want = (x as f64).exp();
                worst[0] = worst[0].max(((exp(x) as f64 - want) / want).abs());
            }
            if x.abs() <= 3.0 {
                worst[1] = worst[1].max((erf(x) as f64 - series_erf(x as f64)).abs());
            } else {
                worst[1] = worst[1].max((erf(x).abs() as f64 - 1.0).abs() - 2.3e-5);
            }
            worst[2] = worst[2].max((tanh(x) as f64 - (x as f64).tanh()).abs());
        }
        assert!(worst[0] < 3e-7, "exp rel err {}", worst[0]);
        assert!(worst[1] < 5e-7, "erf abs err {}", worst[1]);
        assert!(worst[2] < 3e-7, "tanh abs err {}", worst[2]);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(-88.0), 0.0);
        assert!(exp(88.0).is_finite());
        assert!(erf(0.0).abs() < 1e-6);
    }

    /// erf by its Maclaurin series in f64 (reference for |x| <= 3, where it stays accurate).
    fn series_erf(x: f64) -> f64 {
        let mut term = x;
        let mut s = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            s += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        s * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn math_reductions() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 11.0) * 0.5).collect();
        assert_eq!(sum(&xs), xs.iter().sum::<f32>());
        assert_eq!(max(&xs), 12.5);
        let d: f32 = xs.iter().map(|x| x * x).sum();
        assert!((dot(&xs, &xs) - d).abs() < 1e-3);
    }
}
