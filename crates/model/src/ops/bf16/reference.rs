//! The slow twin of the bf16 kernels: operands rounded to bf16 exactly as the kernels round them,
//! products summed in f64 (so the only difference left to a kernel is its f32 summation).

use super::super::views::MatView;
use super::to_bf16;

/// bf16 bits → f32 (exact).
pub(crate) fn from_bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `m × n` row-major `bf16(lhs) · bf16(rhs)`, summed in f64, and `Σ_k |a_ik b_kj|` beside it (the
/// scale a kernel's f32 summation error is relative to).
pub(crate) fn gemm(m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; m * n];
    let mut magnitude = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut abs) = (0f64, 0f64);
            for p in 0..k {
                let a = f64::from(from_bf16(to_bf16(lhs.data[i * lhs.rs + p * lhs.cs])));
                let b = f64::from(from_bf16(to_bf16(rhs.data[p * rhs.rs + j * rhs.cs])));
                sum += a * b;
                abs += (a * b).abs();
            }
            out[i * n + j] = sum;
            magnitude[i * n + j] = abs;
        }
    }
    (out, magnitude)
}
