//! Every bf16 kernel against the reference: rounding of the operands, padding at every edge,
//! strided and transposed views, accumulation and scale, and bits independent of the thread count.

use super::super::gemm_args::GemmArgs;
use super::super::views::MatView;
use super::{available_kernels, kernel, reference, Bf16Kernel};
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

/// Runs `kernel`; `None` when it is `Bf16Kernel::None`.
#[allow(clippy::too_many_arguments)]
fn run_on<R: super::Operand>(
    kernel: Bf16Kernel,
    m: usize,
    n: usize,
    k: usize,
    lhs: MatView,
    rhs: MatView<R>,
    init: &[f32],
    accumulate: bool,
    scale: f32,
    parallel: bool,
) -> Option<Vec<f32>> {
    let mut dst = init.to_vec();
    let args = GemmArgs { m, n, k, dst: dst.as_mut_ptr(), dst_rs: n, dst_cs: 1, accumulate, scale, lhs, rhs, parallel };
    // SAFETY: dst is m × n row-major, owned here; the kernel is available or None.
    let ran = unsafe { super::gemm_on(kernel, args, None) };
    ran.then_some(dst)
}

/// Runs the machine's kernel; `None` when it has none.
fn run(m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView, init: &[f32], accumulate: bool, scale: f32, parallel: bool) -> Option<Vec<f32>> {
    run_on(kernel(), m, n, k, lhs, rhs, init, accumulate, scale, parallel)
}

fn bf16_copy(v: &[f32]) -> Vec<half::bf16> {
    v.iter().map(|&x| half::bf16::from_f32(x)).collect()
}

#[test]
fn kernels_match_the_reference_at_every_edge() {
    let kernels = available_kernels();
    if kernels.is_empty() {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16 or AVX512-BF16)");
        return;
    }
    for kernel in kernels {
        one_kernel_matches_the_reference(kernel);
    }
}

fn one_kernel_matches_the_reference(kernel: Bf16Kernel) {
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
        // A weight held in bf16 (row-major, or transposed as in `x wᵀ`): the same products.
        let (b16, bt16) = (bf16_copy(&b), bf16_copy(&bt));
        for (lhs, rhs, what) in views {
            let (want, magnitude) = reference::gemm(m, n, k, lhs, rhs);
            for (accumulate, scale) in [(false, 1.0f32), (true, 0.5)] {
                let got = run_on(kernel, m, n, k, lhs, rhs, &init, accumulate, scale, true).unwrap();
                for idx in 0..m * n {
                    let expect = f64::from(scale) * want[idx] + if accumulate { f64::from(init[idx]) } else { 0.0 };
                    // f32 sums of k exact bf16 products: at most k roundings of 2^-24 of the running sum.
                    let tol = (k as f64) * 2f64.powi(-23) * (f64::from(scale) * magnitude[idx] + 1.0) + 1e-7;
                    let diff = (f64::from(got[idx]) - expect).abs();
                    assert!(diff <= tol, "{kernel} {m}x{n}x{k} {what} acc={accumulate}: element {idx}: {} vs {expect} (|diff| {diff:e} > {tol:e})", got[idx]);
                }
                // The same bits on one thread as on many.
                assert_eq!(got, run_on(kernel, m, n, k, lhs, rhs, &init, accumulate, scale, false).unwrap(), "{kernel} {m}x{n}x{k}: thread count changed bits");
                // rhs held in bf16: bit for bit what rounding it in the kernel gives.
                let held = if rhs.cs == 1 { MatView::rows(&b16, n) } else { MatView::transposed(&bt16, k) };
                let got16 = run_on(kernel, m, n, k, lhs, held, &init, accumulate, scale, true).unwrap();
                assert_eq!(got, got16, "{kernel} {m}x{n}x{k} {what}: rhs held in bf16 changed bits");
            }
        }
    }
}

/// A low-rank term summed inside the product (LoRA's update beside a base held in bf16): the sum of
/// the two rounded products, with the term in the last k block only.
#[test]
fn kernels_add_a_low_rank_term_inside_the_product() {
    for kernel in available_kernels() {
        for &(m, n, k, r) in &[(37, 45, 70, 8), (64, 96, 2100, 3), (32, 32, 32, 32)] {
            let (a, b) = (values(m * k, 21), values(k * n, 22));
            let (xa, bt) = (values(m * r, 23), values(n * r, 24));
            let (lhs, rhs) = (MatView::rows(&a, k), MatView::rows(&b, n));
            // The update's rhs as LoRA's Bᵀ: the transpose of a row-major n × r matrix.
            let low = super::LowRank { lhs: MatView::rows(&xa, r), rhs: MatView::transposed(&bt, r), r };
            let (want, mag) = reference::gemm(m, n, k, lhs, rhs);
            let (want_low, mag_low) = reference::gemm(m, n, r, low.lhs, low.rhs);
            let mut got = vec![0f32; m * n];
            let args = GemmArgs { m, n, k, dst: got.as_mut_ptr(), dst_rs: n, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs, parallel: true };
            // SAFETY: got is m × n row-major, owned here; the kernel is available.
            assert!(unsafe { super::gemm_on(kernel, args, Some(low)) });
            for idx in 0..m * n {
                let tol = ((k + r) as f64) * 2f64.powi(-23) * (mag[idx] + mag_low[idx] + 1.0) + 1e-7;
                let diff = (f64::from(got[idx]) - want[idx] - want_low[idx]).abs();
                assert!(diff <= tol, "{kernel} {m}x{n}x{k} r={r}: element {idx} off by {diff:e}");
            }
        }
    }
}

/// What bf16 costs in accuracy on unrounded inputs: about 2^-8 of the products' scale (the
/// tolerance the model-level parity checks in bf16 are built on).
#[test]
fn bf16_error_against_f32_is_of_the_order_of_its_precision() {
    if kernel() == Bf16Kernel::None {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16 or AVX512-BF16)");
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
    use std::time::Instant;
    let kernels = available_kernels();
    if kernels.is_empty() {
        eprintln!("skipped: this CPU has no bf16 kernel (AMX-BF16 or AVX512-BF16)");
        return;
    }
    let time = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
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
            // The case's product, overwriting d (m × n row-major) at each timed run.
            let into_d = |dst| GemmArgs { m, n, k, dst, dst_rs: n, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs, parallel: true };
            // SAFETY: d is m × n row-major, owned here.
            let f32_s = time(&mut || unsafe { super::super::cpu::gemm_raw(Precision::Fp32, into_d(d.as_mut_ptr())) });
            let mut line = format!("{what:>18} {m}x{n}x{k}: f32 {:.1} ms ({:.0} GFLOP/s)", f32_s * 1e3, flops / f32_s / 1e9);
            for &kernel in &kernels {
                // SAFETY: as above; the kernel is available.
                let s = time(&mut || unsafe {
                    super::gemm_on(kernel, into_d(d.as_mut_ptr()), None);
                });
                line += &format!(", {kernel} {:.1} ms ({:.0} GFLOP/s, x{:.2})", s * 1e3, flops / s / 1e9, f32_s / s);
            }
            // The weight held in bf16 (the frozen base of LoRA and SFT): the forward and input gradient.
            if what != "weight grad gT x" {
                let w16: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f32(v)).collect();
                let held = if rhs.cs == 1 { MatView::rows(&w16, n) } else { MatView::transposed(&w16, k) };
                // SAFETY: as above.
                let s = time(&mut || unsafe {
                    super::gemm_on(kernels[0], GemmArgs { m, n, k, dst: d.as_mut_ptr(), dst_rs: n, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs: held, parallel: true }, None);
                });
                line += &format!(", {} weight held in bf16 {:.1} ms (x{:.2})", kernels[0], s * 1e3, f32_s / s);
            }
            println!("{line}");
        }
    }
}
