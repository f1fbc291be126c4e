//! Plumbing shared by the custom ops: contiguous f32 access, row-parallel loops, GEMM, transpose.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Device, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::math::simd_dispatch;
use super::bf16::LowRank;
use super::gemm_args::GemmArgs;
use crate::spec::Precision;

pub(crate) use super::views::{MatView, SharedMut};

/// Elements one rayon task handles at least: below this, splitting costs more than it saves.
const MIN_TASK_ELEMS: usize = 16 * 1024;

/// The f32 data of a contiguous CPU storage.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => bail!("{op}: expected f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input is not contiguous"),
    }
}

/// Runs `f` on the f32 data of `t` (made contiguous first; a no-op when it already is).
pub(crate) fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(slice(cpu, layout, op)?)),
        _ => bail!("{op}: only the CPU device is supported"),
    }
}

/// A linear layer's weight as held: f32, or bf16 (a frozen weight under mixed precision).
#[derive(Clone, Copy)]
pub(crate) enum WeightData<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
}

/// Runs `f` on the data of weight `t` (f32 or bf16, made contiguous first).
pub(crate) fn with_weight<R>(t: &Tensor, op: &str, f: impl FnOnce(WeightData) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else { bail!("{op}: only the CPU device is supported") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: weight is not contiguous") };
    match cpu {
        CpuStorage::F32(v) => Ok(f(WeightData::F32(&v[start..end]))),
        CpuStorage::BF16(v) => Ok(f(WeightData::Bf16(&v[start..end]))),
        other => bail!("{op}: weight must be f32 or bf16, got {:?}", other.dtype()),
    }
}

impl WeightData<'_> {
    /// `dst [+]= x · wᵀ [+ low-rank term]` for `w: [out, in]` and `x: [rows, in]` (the forward of a
    /// linear layer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn x_wt(self, precision: Precision, rows: usize, out_dim: usize, in_dim: usize, dst: &mut [f32], accumulate: bool, x: &[f32], low_rank: Option<LowRank>) {
        let x = MatView::rows(x, in_dim);
        match self {
            WeightData::F32(w) => gemm_with_low_rank(precision, rows, out_dim, in_dim, dst, accumulate, x, MatView::transposed(w, in_dim), low_rank),
            WeightData::Bf16(w) => gemm_bf16_rhs(rows, out_dim, in_dim, dst, accumulate, x, MatView::transposed(w, in_dim), low_rank),
        }
    }

    /// A new `[rows, in]` matrix `g · w [+ low-rank term]` for `g: [rows, out]` (the input gradient of
    /// a linear layer).
    pub(crate) fn g_w(self, precision: Precision, rows: usize, in_dim: usize, out_dim: usize, g: &[f32], low_rank: Option<LowRank>) -> Vec<f32> {
        // SAFETY: a GEMM that does not accumulate writes every element and reads none.
        let mut dst = unsafe { uninit_f32(rows * in_dim) };
        let g = MatView::rows(g, out_dim);
        match self {
            WeightData::F32(w) => gemm_with_low_rank(precision, rows, in_dim, out_dim, &mut dst, false, g, MatView::rows(w, in_dim), low_rank),
            WeightData::Bf16(w) => gemm_bf16_rhs(rows, in_dim, out_dim, &mut dst, false, g, MatView::rows(w, in_dim), low_rank),
        }
        dst
    }
}

/// A CPU tensor owning `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Checks `t` is f32 on the CPU: the ops have no other kernels.
pub(crate) fn check_f32_cpu(t: &Tensor, op: &str, what: &str) -> Result<()> {
    if t.dtype() != candle_core::DType::F32 {
        bail!("{op}: {what} must be f32, got {:?}", t.dtype());
    }
    if !t.device().is_cpu() {
        bail!("{op}: {what} must be on the CPU");
    }
    Ok(())
}

/// Rows per rayon task for rows of `cols` elements.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (MIN_TASK_ELEMS / cols.max(1)).max(1)
}

/// Calls `f(first_row, rows)` on blocks of whole rows of `out`, in parallel.
pub(crate) fn par_row_blocks<F>(out: &mut [f32], cols: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if cols == 0 {
        return;
    }
    let per = rows_per_task(cols);
    out.par_chunks_mut(per * cols)
        .enumerate()
        .for_each(|(block, rows)| f(block * per, rows));
}

/// A new `n`-element vector filled by `fill(first_row, rows)` on blocks of whole rows, in parallel,
/// where `fill` writes every element of its block and reads none. Skips the serial zero-fill of
/// `vec![0; n]`, which on the calling thread cost as much as the parallel pass it precedes.
pub(crate) fn par_rows_new<F>(n: usize, cols: usize, fill: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if cols == 0 {
        return vec![0.0; n];
    }
    // SAFETY: `fill` writes every element of its block before anything reads it (its contract),
    // and the blocks cover the vector.
    let mut out = unsafe { uninit_f32(n) };
    par_row_blocks(&mut out, cols, fill);
    out
}

/// A vector of `n` f32 that the caller fills (e.g. with non-accumulating GEMMs from parallel tasks)
/// without the serial zero-fill of `vec![0; n]`; candle's own CPU backend allocates the same way.
///
/// # Safety
/// Every element must be written before any element is read.
pub(crate) unsafe fn uninit_f32(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    v.set_len(n);
    v
}

/// `rows` copies of `row`, filled in parallel.
pub(crate) fn repeat_rows(row: &[f32], rows: usize) -> Vec<f32> {
    let cols = row.len();
    par_rows_new(rows * cols, cols, |_, block| {
        for dst in block.chunks_exact_mut(cols.max(1)) {
            dst.copy_from_slice(row);
        }
    })
}

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)` through the `gemm` crate, with
/// candle's thread count (RAYON_NUM_THREADS).
#[cfg(test)]
pub(crate) fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: MatView, rhs: MatView) {
    gemm_at(Precision::Fp32, m, n, k, dst, accumulate, lhs, rhs)
}

/// [`gemm`] in `precision`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_at(precision: Precision, m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: MatView, rhs: MatView) {
    assert_eq!(dst.len(), m * n, "gemm: destination size");
    let args = GemmArgs { m, n, k, dst: dst.as_mut_ptr(), dst_rs: n, dst_cs: 1, accumulate, scale: 1.0, lhs, rhs, parallel: true };
    // SAFETY: dst is exactly m×n row-major and exclusively borrowed.
    unsafe { gemm_raw(precision, args) }
}

/// A new `m × n` matrix `scale · lhs · rhs`, row-major, or column-major (= its transpose,
/// `n × m` row-major) when `transposed`. The `gemm` crate puts the destination's contiguous
/// dimension in its register tile: for a thin product (n ≤ 16, e.g. `x Aᵀ` with LoRA rank 8)
/// the column-major result uses the full tile instead of half of it. No zero-fill: every element
/// is written by the GEMM.
#[cfg(test)]
pub(crate) fn gemm_new(m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView, scale: f32, transposed: bool) -> Vec<f32> {
    gemm_new_on(Precision::Fp32, m, n, k, lhs, rhs, scale, transposed, true)
}

/// [`gemm_new`] (row-major, scale 1) in `precision`.
pub(crate) fn gemm_new_at(precision: Precision, m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView) -> Vec<f32> {
    gemm_new_on(precision, m, n, k, lhs, rhs, 1.0, false, true)
}

/// [`gemm_new`] (row-major) on the calling thread only, for tasks of an already parallel loop.
pub(crate) fn gemm_new_single(m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView, scale: f32) -> Vec<f32> {
    gemm_new_on(Precision::Fp32, m, n, k, lhs, rhs, scale, false, false)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_new_on(precision: Precision, m: usize, n: usize, k: usize, lhs: MatView, rhs: MatView, scale: f32, transposed: bool, parallel: bool) -> Vec<f32> {
    let (rs, cs) = if transposed { (1, m) } else { (n, 1) };
    // SAFETY: (i, j) -> i·rs + j·cs covers each of the m·n elements exactly once; a GEMM that does
    // not accumulate (or k = 0, which fills zeros) writes every element and reads none.
    unsafe {
        let mut out = uninit_f32(m * n);
        gemm_raw(precision, GemmArgs { m, n, k, dst: out.as_mut_ptr(), dst_rs: rs, dst_cs: cs, accumulate: false, scale, lhs, rhs, parallel });
        out
    }
}

/// Element-wise sum of equal-length partial results, added in the order given: with partials
/// per fixed block, the total does not depend on the thread count.
pub(crate) fn sum_in_order(parts: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0f32; len];
    for part in parts {
        for (t, v) in total.iter_mut().zip(&part) {
            *t += v;
        }
    }
    total
}

/// `dst = [dst +] scale · lhs · rhs` as [`GemmArgs`] lays it out, in `precision`. In bf16,
/// products of at least 32 × 32 × 32 run the bf16 kernel (smaller ones, e.g. LoRA's rank-r
/// factors, stay f32, as does everything where the CPU has no kernel).
///
/// # Safety
/// `args.dst` must be valid for writes of every element (i, j), i < m, j < n, at `i * dst_rs + j * dst_cs`
/// (and for reads when `accumulate`), and no other thread may access those elements during the call.
pub(crate) unsafe fn gemm_raw(precision: Precision, args: GemmArgs) {
    // Copies of the fields (all `Copy`): `args` itself stays whole, to be handed to the bf16 kernel.
    let GemmArgs { m, n, k, dst, dst_rs, dst_cs, accumulate, scale, lhs, rhs, parallel } = args;
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.add(i * dst_rs + j * dst_cs).write(0.0);
                }
            }
        }
        return;
    }
    if precision == Precision::Bf16
        && m >= 32
        && n >= 32
        && k >= 32
        && super::bf16::gemm_on(super::bf16::kernel(), args, None)
    {
        return;
    }
    let threads = if parallel { candle_core::utils::get_num_threads() } else { 1 };
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs.data.as_ptr(),
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.data.as_ptr(),
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        parallelism,
    )
}

/// `dst (m×n, row-major) = [dst +] lhs · rhs [+ low-rank term]` where `rhs` is a weight held in
/// bf16: on the bf16 kernel at any size (its operand is bf16 already), else (a CPU without one,
/// where weights are not held in bf16 in the first place) through an f32 copy of it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_bf16_rhs(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: MatView, rhs: MatView<half::bf16>, low_rank: Option<LowRank>) {
    assert_eq!(dst.len(), m * n, "gemm: destination size");
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    if let Some(t) = low_rank {
        t.lhs.check(m, t.r, "low-rank lhs");
        t.rhs.check(t.r, n, "low-rank rhs");
    }
    if m > 0 && n > 0 && k > 0 {
        let args = GemmArgs { m, n, k, dst: dst.as_mut_ptr(), dst_rs: n, dst_cs: 1, accumulate, scale: 1.0, lhs, rhs, parallel: true };
        // SAFETY: dst is exactly m×n row-major and exclusively borrowed; m, n, k ≥ 1.
        if unsafe { super::bf16::gemm_on(super::bf16::kernel(), args, low_rank) } {
            return;
        }
    }
    let wide: Vec<f32> = rhs.data.iter().map(|v| v.to_f32()).collect();
    gemm_with_low_rank(Precision::Fp32, m, n, k, dst, accumulate, lhs, MatView { data: &wide, rs: rhs.rs, cs: rhs.cs }, low_rank);
}

/// [`gemm_at`], then the low-rank term (in f32) added onto `dst` (m × n, row-major).
#[allow(clippy::too_many_arguments)]
fn gemm_with_low_rank(precision: Precision, m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: MatView, rhs: MatView, low_rank: Option<LowRank>) {
    gemm_at(precision, m, n, k, dst, accumulate, lhs, rhs);
    if let Some(t) = low_rank {
        gemm_at(Precision::Fp32, m, n, t.r, dst, true, t.lhs, t.rhs);
    }
}

/// Row-major `rows × cols` -> row-major `cols × rows`, in cache blocks, in parallel.
#[cfg(test)]
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols);
    let mut dst = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    // Each task owns TILE rows of dst (= TILE columns of src).
    dst.par_chunks_mut(TILE * rows).enumerate().for_each(|(b, out)| transpose_cols(src, rows, cols, b * TILE, out));
    dst
}

/// Single-threaded [`transpose`] into `dst` (`cols × rows`).
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert_eq!(src.len(), rows * cols);
    assert_eq!(dst.len(), rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    for (b, out) in dst.chunks_mut(TILE * rows).enumerate() {
        transpose_cols(src, rows, cols, b * TILE, out);
    }
}

const TILE: usize = 32;

/// Writes columns `c0..c0 + out.len() / rows` of `src` as rows of `out`, TILE×TILE at a time.
fn transpose_cols(src: &[f32], rows: usize, cols: usize, c0: usize, out: &mut [f32]) {
    transpose_block(src, rows, cols, c0, out)
}

/// Columns `c0..c0 + out.len() / rows` of row-major `src` (`rows × cols`) into `out`, column-major,
/// in 8 × 8 tiles: fixed-size tiles without bounds checks compile to vector shuffles, where an
/// element-at-a-time loop with strided reads ran at a fraction of memory speed.
#[inline(always)]
fn transpose_block_inner(src: &[f32], rows: usize, cols: usize, c0: usize, out: &mut [f32]) {
    const T: usize = 8;
    let cn = out.len() / rows.max(1);
    assert!(rows * cols <= src.len() && c0 + cn <= cols && cn * rows <= out.len());
    let (full_r, full_c) = (rows / T * T, cn / T * T);
    for r0 in (0..full_r).step_by(T) {
        for c in (0..full_c).step_by(T) {
            let mut tile = [[0f32; T]; T];
            for (i, row) in tile.iter_mut().enumerate() {
                // SAFETY: r0 + i < rows and c0 + c + T <= c0 + cn <= cols (asserted above).
                row.copy_from_slice(unsafe { src.get_unchecked((r0 + i) * cols + c0 + c..(r0 + i) * cols + c0 + c + T) });
            }
            for j in 0..T {
                // SAFETY: c + j < cn and r0 + T <= rows, so the range lies inside out.
                let dst = unsafe { out.get_unchecked_mut((c + j) * rows + r0..(c + j) * rows + r0 + T) };
                for i in 0..T {
                    dst[i] = tile[i][j];
                }
            }
        }
    }
    // Ragged edges, element by element.
    for c in 0..cn {
        let from = if c < full_c { full_r } else { 0 };
        for r in from..rows {
            out[c * rows + r] = src[r * cols + c0 + c];
        }
    }
}
simd_dispatch!(fn transpose_block(src: &[f32], rows: usize, cols: usize, c0: usize, out: &mut [f32]) => transpose_block_inner);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_cpu_gemm_and_transpose() {
        let (m, n, k) = (37, 19, 53);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect(); // n×k
        let mut c = vec![1f32; m * n];
        gemm(m, n, k, &mut c, true, MatView::rows(&a, k), MatView::transposed(&b, k));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
                assert_eq!(c[i * n + j], want);
            }
        }
        let t = transpose(&a, m, k);
        for i in 0..m {
            for p in 0..k {
                assert_eq!(t[p * m + i], a[i * k + p]);
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Best of `runs` wall times of `f`, in seconds.
    pub(crate) fn best_of(runs: usize, f: &mut dyn FnMut()) -> f64 {
        (0..runs)
            .map(|_| {
                let s = std::time::Instant::now();
                f();
                s.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    }

    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_thin_gemm_orientations() {
        let (t, r) = (4096usize, 8usize);
        let time = |f: &mut dyn FnMut()| best_of(7, f) * 1e3;
        for d in [384usize, 1536] {
            let x: Vec<f32> = (0..t * d).map(|v| (v % 7) as f32 * 0.1).collect();
            let small_t: Vec<f32> = (0..r * t).map(|v| (v % 5) as f32 * 0.1).collect(); // [r, T]
            let a: Vec<f32> = (0..r * d).map(|v| (v % 3) as f32 * 0.1).collect(); // [r, d]
            // dA-like: [r, d] = small_t [r, T] · x [T, d]
            let cur = time(&mut || { let _ = gemm_new(r, d, t, MatView::rows(&small_t, t), MatView::rows(&x, d), 1.0, false); });
            let mut out = vec![0f32; r * d];
            let alt = time(&mut || unsafe {
                // dAᵀ [d, r] = xᵀ [d, T] · smallᵀ [T, r], written into out as [r, d]
                let (lhs, rhs) = (MatView::transposed(&x, d), MatView::transposed(&small_t, t));
                gemm_raw(Precision::Fp32, GemmArgs { m: d, n: r, k: t, dst: out.as_mut_ptr(), dst_rs: 1, dst_cs: d, accumulate: false, scale: 1.0, lhs, rhs, parallel: true })
            });
            // xa_t-like: [r, T] (col-major dst) = x [T, d] · aᵀ [d, r]
            let cur2 = time(&mut || { let _ = gemm_new(t, r, d, MatView::rows(&x, d), MatView::transposed(&a, d), 1.0, true); });
            let mut out2 = vec![0f32; r * t];
            let alt2 = time(&mut || unsafe {
                // [r, T] = a [r, d] · xᵀ [d, T]
                let (lhs, rhs) = (MatView::rows(&a, d), MatView::transposed(&x, d));
                gemm_raw(Precision::Fp32, GemmArgs { m: r, n: t, k: d, dst: out2.as_mut_ptr(), dst_rs: t, dst_cs: 1, accumulate: false, scale: 1.0, lhs, rhs, parallel: true })
            });
            println!("d {d}: [r,d] = [r,T]·[T,d]: {cur:.2} ms vs column-major lhs {alt:.2} ms;  [T,r] = [T,d]·[d,r]: {cur2:.2} ms vs [r,d]·[d,T] {alt2:.2} ms");
        }
    }

    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_transpose_timing() {
        for (rows, cols) in [(256usize, 1536usize), (256, 384), (4096, 384)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![0f32; rows * cols];
            let mut best = f64::MAX;
            for _ in 0..20 {
                let s = std::time::Instant::now();
                transpose_into(&src, rows, cols, &mut dst);
                best = best.min(s.elapsed().as_secs_f64());
            }
            assert_eq!(dst[3 * rows + 5], src[5 * cols + 3]);
            println!("transpose {rows}x{cols}: {:.1} us, {:.1} GB/s", best * 1e6, 8.0 * (rows * cols) as f64 / best / 1e9);
        }
    }

    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_gemm_orientations() {
        let t = 4096usize;
        let time = |f: &mut dyn FnMut()| best_of(5, f);
        for (o, i) in [(384usize, 384usize), (1536, 384), (384, 1536)] {
            let x: Vec<f32> = (0..t * i).map(|v| (v % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..o * i).map(|v| (v % 5) as f32 * 0.1).collect();
            let g: Vec<f32> = (0..t * o).map(|v| (v % 3) as f32 * 0.1).collect();
            let fl = 2.0 * (t * o * i) as f64 / 1e9;
            let mut y = vec![0f32; t * o];
            let a = time(&mut || gemm(t, o, i, &mut y, false, MatView::rows(&x, i), MatView::transposed(&w, i)));
            let a2 = time(&mut || { let _ = gemm_new(t, o, i, MatView::rows(&x, i), MatView::transposed(&w, i), 1.0, true); });
            let a3 = time(&mut || { let _ = gemm_new(o, t, i, MatView::rows(&w, i), MatView::transposed(&x, i), 1.0, false); });
            let b = time(&mut || { let _ = gemm_new(t, i, o, MatView::rows(&g, o), MatView::rows(&w, i), 1.0, false); });
            let b2 = time(&mut || { let _ = gemm_new(i, t, o, MatView::transposed(&w, i), MatView::transposed(&g, o), 1.0, false); });
            let c = time(&mut || { let _ = gemm_new(o, i, t, MatView::transposed(&g, o), MatView::rows(&x, i), 1.0, false); });
            let c2 = time(&mut || { let _ = gemm_new(i, o, t, MatView::transposed(&x, i), MatView::rows(&g, o), 1.0, false); });
            println!("out {o} in {i}: fwd {:.0} / dstT {:.0} / swapped {:.0}   dx {:.0} / swapped {:.0}   dw {:.0} / swapped {:.0} GFLOP/s",
                fl / a, fl / a2, fl / a3, fl / b, fl / b2, fl / c, fl / c2);
        }
    }

    #[test]
    #[ignore = "micro-benchmark"]
    fn ops_gemm_timing() {
        let (m, n, k) = (4096usize, 1536usize, 384usize);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = std::time::Instant::now();
            gemm(m, n, k, &mut c, false, MatView::rows(&a, k), MatView::transposed(&b, k));
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("gemm helper best {:.2} ms  {:.1} GFLOP/s  threads {}", best * 1e3, 2.0 * (m * n * k) as f64 / best / 1e9, candle_core::utils::get_num_threads());
    }
}
