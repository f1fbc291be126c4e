//! Every bf16 kernel against the reference: rounding of the operands, padding at every edge,
//! strided and transposed views, accumulation and scale, and bits independent of the thread count.

use super::super::cpu::MatView;
use super::{kernel, reference, Bf16Kernel};
use crate::spec::Precision;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs the machine's kernel; `None` (saying so) when it has none.
fn run(m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView, init: &[f32], accumulate: bool, scale: f32, parallel: bool) -> Option<Vec<f32>> {
    let mut dst = init.to_vec();
    // SAFETY: dst is m × n row-major, owned here.
    let ran = unsafe { super::gemm(m, n, k, dst.as_mut_ptr(), n, 1, accumulate, scale, lhs, rhs, parallel) };
    ran.then_some(dst)
}

#[test]
fn kernels_match_the_reference_at_every_edge() {
    if kernel() == Bf16Kernel::None {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16)");
        return;
    }
    // Shapes: partial tiles and blocks everywhere, k over several k blocks (1024) with a partial last.
    for &(m, n, k) in &[(1, 1, 1), (16, 16, 32), (32, 32, 64), (37, 45, 70), (70, 33, 384), (5, 100, 31), (33, 20, 45), (64, 40, 2100)] {
        let a = values(m * k, 1 + m as u64);
        let b = values(k * n, 2 + n as u64);
        let init = values(m * n, 3);
        // Each operand row-major or as the transpose of a row-major matrix (`x wᵀ`, `gᵀ x`).
        let at: Vec<f32> = (0..m * k).map(|idx| a[(idx % m) * k + idx / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
        let views = [
            (MatView::rows(&a, k), MatView::rows(&b, n), "lhs, rhs row-major"),
            (MatView::rows(&a, k), MatView::transposed(&bt, k), "rhs transposed"),
            (MatView::transposed(&at, m), MatView::rows(&b, n), "lhs transposed"),
        ];
        for (lhs, rhs, what) in views {
            let (want, magnitude) = reference::gemm(m, n, k, lhs, rhs);
            for (accumulate, scale) in [(false, 1.0f32), (true, 0.5)] {
                let got = run(m, n, k, lhs, rhs, &init, accumulate, scale, true).unwrap();
                for idx in 0..m * n {
                    let expect = f64::from(scale) * want[idx] + if accumulate { f64::from(init[idx]) } else { 0.0 };
                    // f32 sums of k exact bf16 products: at most k roundings of 2^-24 of the running sum.
                    let tol = (k as f64) * 2f64.powi(-23) * (f64::from(scale) * magnitude[idx] + 1.0) + 1e-7;
                    let diff = (f64::from(got[idx]) - expect).abs();
                    assert!(diff <= tol, "{m}x{n}x{k} {what} acc={accumulate}: element {idx}: {} vs {expect} (|diff| {diff:e} > {tol:e})", got[idx]);
                }
                // The same bits on one thread as on many.
                assert_eq!(got, run(m, n, k, lhs, rhs, &init, accumulate, scale, false).unwrap(), "{m}x{n}x{k}: thread count changed bits");
            }
        }
    }
}

/// What bf16 costs in accuracy on unrounded inputs: about 2^-8 of the products' scale (the
/// tolerance the model-level parity checks in bf16 are built on).
#[test]
fn bf16_error_against_f32_is_of_the_order_of_its_precision() {
    if kernel() == Bf16Kernel::None {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16)");
        return;
    }
    let (m, n, k) = (64, 64, 384);
    let a = values(m * k, 11);
    let b = values(k * n, 12);
    let got = run(m, n, k, MatView::rows(&a, k), MatView::rows(&b, n), &vec![0.0; m * n], false, 1.0, true).unwrap();
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let (exact, mag): (f64, f64) = (0..k).fold((0.0, 0.0), |(s, g), p| {
                let x = f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                (s + x, g + x.abs())
            });
            worst = worst.max((f64::from(got[i * n + j]) - exact).abs() / mag);
        }
    }
    assert!(worst < 2f64.powi(-8), "relative error {worst:e}");
    assert!(worst > 2f64.powi(-16), "operands were not rounded to bf16 ({worst:e})");
}

/// Not a test: the kernel's throughput against the f32 GEMM on MiniLM-L6's shapes at batch 32 × 128,
/// run by hand (`RAYON_NUM_THREADS=2 cargo test -p slora-model --lib bf16_throughput -- --ignored
/// --nocapture`); prints, asserts nothing.
#[test]
#[ignore]
fn bf16_throughput() {
    if kernel() == Bf16Kernel::None {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16)");
        return;
    }
    use std::time::Instant;
    // A linear layer's three GEMMs at 4096 tokens: forward x wᵀ, input gradient g w, weight
    // gradient gᵀ x; for the FFN's two shapes (384 → 1536 and back).
    for &(tokens, inp, out) in &[(4096usize, 384usize, 1536usize), (4096, 1536, 384)] {
        let x = values(tokens * inp, 1);
        let w = values(out * inp, 2);
        let g = values(tokens * out, 3);
        let cases = [
            ("forward x wT", tokens, out, inp, MatView::rows(&x, inp), MatView::transposed(&w, inp)),
            ("input grad g w", tokens, inp, out, MatView::rows(&g, out), MatView::rows(&w, inp)),
            ("weight grad gT x", out, inp, tokens, MatView::transposed(&g, out), MatView::rows(&x, inp)),
        ];
        for (what, m, n, k, lhs, rhs) in cases {
            let mut d = vec![0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let (mut f32_s, mut bf_s) = (f64::MAX, f64::MAX);
            for _ in 0..3 {
                let t = Instant::now();
                // SAFETY: d is m × n row-major, owned here.
                unsafe { super::super::cpu::gemm_raw(Precision::Fp32, m, n, k, d.as_mut_ptr(), n, 1, false, 1.0, lhs, rhs, true) };
                f32_s = f32_s.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                // SAFETY: as above.
                unsafe { super::gemm(m, n, k, d.as_mut_ptr(), n, 1, false, 1.0, lhs, rhs, true) };
                bf_s = bf_s.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{what:>18} {m}x{n}x{k}: f32 {:.1} ms ({:.0} GFLOP/s), {} {:.1} ms ({:.0} GFLOP/s), x{:.2}",
                f32_s * 1e3,
                flops / f32_s / 1e9,
                kernel(),
                bf_s * 1e3,
                flops / bf_s / 1e9,
                f32_s / bf_s
            );
        }
    }
}
