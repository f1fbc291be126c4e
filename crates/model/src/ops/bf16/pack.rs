//! Operand packing shared by the bf16 kernels, and the loop around their micro-kernels.
//!
//! - `rhs` (k × n) becomes pair-interleaved ("VNNI") panels: for each 16-column block and each
//!   32-deep k step, 16 rows of 64 bytes, row r holding `(rhs[2r][j], rhs[2r + 1][j])` for the
//!   block's 16 columns j. That is an AMX tile and, row by row, the `zmm` operand of `vdpbf16ps`.
//! - `lhs` is packed per band of 32 rows, row-major with k padded to 32.
//!
//! Operands are f32 (rounded to nearest even here) or bf16 already (weights held in bf16: copied).

use std::arch::x86_64::__m512;

use rayon::prelude::*;

use super::super::gemm_args::GemmArgs;
use super::super::views::{MatView, SharedMut};
use super::{LowRank, Operand};

/// Rows and columns of one 16-wide panel.
pub(super) const TILE: usize = 16;
/// k per step (32 bf16 = 64 bytes per panel row).
pub(super) const KSTEP: usize = 32;
/// Rows and columns of the output block one micro-kernel call computes.
pub(super) const BLOCK: usize = 2 * TILE;
/// Depth of one k block (a multiple of [`KSTEP`]): one block of packed rhs (KC × n bf16) stays in
/// cache while every band of lhs passes over it.
const KC: usize = 1024;

/// 16 values from `src` as f32 (bf16 widens exactly).
///
/// # Safety
/// 16 elements readable at `src`; AVX-512F available (the caller's `target_feature`).
#[inline(always)]
unsafe fn load16<T: Operand>(src: *const T) -> __m512 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32, _mm512_loadu_ps, _mm512_slli_epi32};
    if T::IS_BF16 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(src as *const __m256i))))
    } else {
        _mm512_loadu_ps(src as *const f32)
    }
}

pub(super) fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// `rhs` (k × n) as pair-interleaved panels (module docs), k padded to `kp`: the first `kp / 32`
/// steps of each panel of `out`, whose panels are `panel_steps` steps apart (more when a low-rank
/// term follows). `out` is zeroed: padding is left as it is.
fn pack_rhs<T: Operand>(k: usize, n: usize, rhs: MatView<T>, kp: usize, panel_steps: usize, out: &mut [u16]) {
    let ksteps = kp / KSTEP;
    let tile_len = TILE * KSTEP;
    if rhs.cs == 1 {
        return pack_rhs_rows(k, n, rhs, kp, panel_steps, out);
    }
    out.par_chunks_mut(panel_steps * tile_len).enumerate().for_each(|(jb, panel)| {
        for (ks, tile) in panel.chunks_mut(tile_len).take(ksteps).enumerate() {
            if rhs.rs == 1 && rhs.cs != 1 && (ks + 1) * KSTEP <= k {
                // rhs is the transpose of a row-major n × k matrix (a weight in `x wᵀ`): its column j
                // holds 32 consecutive k = 16 pairs, one per panel row, at the panel's column j.
                let mut pairs = [0u16; KSTEP];
                for c in 0..TILE.min(n.saturating_sub(jb * TILE)) {
                    let j = jb * TILE + c;
                    let src = &rhs.data[j * rhs.cs + ks * KSTEP..j * rhs.cs + (ks + 1) * KSTEP];
                    // SAFETY: the kernels run only where AVX512-BF16 is available.
                    unsafe { convert_row(src, &mut pairs) };
                    for r in 0..TILE {
                        tile[r * KSTEP + 2 * c] = pairs[2 * r];
                        tile[r * KSTEP + 2 * c + 1] = pairs[2 * r + 1];
                    }
                }
                continue;
            }
            for r in 0..TILE {
                let (p, j0) = (ks * KSTEP + 2 * r, jb * TILE);
                if rhs.cs == 1 && p + 1 < k && j0 + TILE <= n {
                    let row = &rhs.data[p * rhs.rs + j0..];
                    // SAFETY: 16 values of rows p and p + 1 from column j0 are in range; AVX512-BF16
                    // and AVX512-BW are available.
                    unsafe { interleave_pair(&row[..TILE], &row[rhs.rs..rhs.rs + TILE], &mut tile[r * KSTEP..(r + 1) * KSTEP]) };
                    continue;
                }
                for c in 0..TILE {
                    let j = jb * TILE + c;
                    if j >= n {
                        continue;
                    }
                    for half in 0..2 {
                        let p = ks * KSTEP + 2 * r + half;
                        if p < k {
                            tile[r * KSTEP + 2 * c + half] = rhs.data[p * rhs.rs + j * rhs.cs].bf16_bits();
                        }
                    }
                }
            }
        }
    });
}

/// A pointer to packed bf16 that parallel tasks share, each writing its own elements.
#[derive(Clone, Copy)]
struct SharedU16(*mut u16);
// SAFETY: users guarantee disjoint writes (documented at each use).
unsafe impl Send for SharedU16 {}
unsafe impl Sync for SharedU16 {}

impl SharedU16 {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the raw field).
    fn ptr(self) -> *mut u16 {
        self.0
    }
}

/// [`pack_rhs`] for a row-major `rhs` (e.g. the activations in a weight gradient `gᵀ x`, k = tokens):
/// k step by k step across all panels, so each pair of source rows is read once and in order (per
/// panel, the rows were read a cache line at a time, thousands of bytes apart: a TLB miss each), and
/// each panel row is written whole (64 bytes).
fn pack_rhs_rows<T: Operand>(k: usize, n: usize, rhs: MatView<T>, kp: usize, panel_steps: usize, out: &mut [u16]) {
    let tile_len = TILE * KSTEP;
    let panels = n.div_ceil(TILE);
    assert!(panels == 0 || (panels - 1) * panel_steps * tile_len + kp / KSTEP * tile_len <= out.len(), "bf16 pack: rhs panels out of bounds");
    let base = SharedU16(out.as_mut_ptr());
    (0..kp / KSTEP).into_par_iter().for_each(|ks| {
        for r in 0..TILE {
            let p = ks * KSTEP + 2 * r;
            if p >= k {
                break; // zero padding, as allocated
            }
            for jb in 0..panels {
                let j0 = jb * TILE;
                // SAFETY: inside out (asserted above); step ks of every panel is written by this task only.
                let dst = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(jb * panel_steps * tile_len + ks * tile_len + r * KSTEP), KSTEP) };
                if p + 1 < k && j0 + TILE <= n {
                    let (a, b) = (&rhs.data[p * rhs.rs + j0..p * rhs.rs + j0 + TILE], &rhs.data[(p + 1) * rhs.rs + j0..(p + 1) * rhs.rs + j0 + TILE]);
                    // SAFETY: AVX512-BF16 and AVX512-BW are available; 16 values of each row.
                    unsafe { interleave_pair(a, b, dst) };
                    continue;
                }
                for c in 0..TILE.min(n - j0) {
                    for half in 0..2 {
                        if p + half < k {
                            dst[2 * c + half] = rhs.data[(p + half) * rhs.rs + j0 + c].bf16_bits();
                        }
                    }
                }
            }
        }
    });
}

/// Every band of a transposed `lhs` (the transpose of a row-major k × m matrix: `gᵀ` in a weight
/// gradient, k = tokens), bands `BLOCK × stride` one after another with the block in their first
/// `kp` columns: k step by k step, so each source row is read once and in order (a band at a time,
/// its 128 bytes of every row were thousands of bytes apart). `out` is zeroed.
fn pack_lhs_transposed<T: Operand>(m: usize, k: usize, lhs: MatView<T>, kp: usize, stride: usize, out: &mut [u16]) {
    let bands = m.div_ceil(BLOCK);
    assert!(out.len() >= bands * BLOCK * stride && kp <= stride, "bf16 pack: lhs bands out of bounds");
    let base = SharedU16(out.as_mut_ptr());
    (0..kp / KSTEP).into_par_iter().for_each(|ks| {
        let mut pairs = [0u16; 2 * BLOCK];
        let (mut p, end) = (ks * KSTEP, k.min((ks + 1) * KSTEP));
        while p < end {
            let two = p + 1 < end;
            for ib in 0..bands {
                let (i0, rows) = (ib * BLOCK, BLOCK.min(m - ib * BLOCK));
                // SAFETY: inside out (asserted above); columns ks·32.. of every band row are written
                // by this task only.
                let band = unsafe { std::slice::from_raw_parts_mut(base.ptr().add(ib * BLOCK * stride), BLOCK * stride) };
                if two && rows == BLOCK {
                    let (a, b) = (&lhs.data[i0 + p * lhs.cs..], &lhs.data[i0 + (p + 1) * lhs.cs..]);
                    for half in 0..2 {
                        let at = half * TILE;
                        // SAFETY: AVX512-BF16 and AVX512-BW are available; 16 values of each row.
                        unsafe { interleave_pair(&a[at..at + TILE], &b[at..at + TILE], &mut pairs[2 * at..2 * at + 2 * TILE]) };
                    }
                    for r in 0..BLOCK {
                        band[r * stride + p] = pairs[2 * r];
                        band[r * stride + p + 1] = pairs[2 * r + 1];
                    }
                    continue;
                }
                for r in 0..rows {
                    band[r * stride + p] = lhs.data[i0 + r + p * lhs.cs].bf16_bits();
                    if two {
                        band[r * stride + p + 1] = lhs.data[i0 + r + (p + 1) * lhs.cs].bf16_bits();
                    }
                }
            }
            p += if two { 2 } else { 1 };
        }
    });
}

/// `dst = [bf16(a0), bf16(b0), bf16(a1), bf16(b1), …]` for 16 values of two rows: one panel row.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave_pair<T: Operand>(a: &[T], b: &[T], dst: &mut [u16]) {
    use std::arch::x86_64::{__m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_si512, _mm512_permutexvar_epi16, _mm512_storeu_si512};
    const ORDER: [u16; 32] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];
    debug_assert!(a.len() >= TILE && b.len() >= TILE && dst.len() >= 2 * TILE);
    let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(load16(b.as_ptr()), load16(a.as_ptr())));
    let order = _mm512_loadu_si512(ORDER.as_ptr() as *const __m512i);
    _mm512_storeu_si512(dst.as_mut_ptr() as *mut __m512i, _mm512_permutexvar_epi16(order, packed));
}

/// Rows `i0 .. i0 + BLOCK` of `lhs` as bf16 in the first `kp` columns of a row-major band `stride`
/// wide (zero-padded). A transposed `lhs` is packed whole by [`pack_lhs_transposed`] instead.
fn pack_lhs_band<T: Operand>(i0: usize, m: usize, k: usize, lhs: MatView<T>, kp: usize, stride: usize, out: &mut [u16]) {
    for r in 0..BLOCK {
        let row = &mut out[r * stride..r * stride + kp];
        let i = i0 + r;
        if i >= m {
            row.fill(0);
            continue;
        }
        if lhs.cs == 1 {
            let src = &lhs.data[i * lhs.rs..i * lhs.rs + k];
            // SAFETY: AVX512-BF16 is available.
            unsafe { convert_row(src, &mut row[..k]) };
            row[k..].fill(0);
            continue;
        }
        for (p, v) in row.iter_mut().enumerate() {
            *v = if p < k { lhs.data[i * lhs.rs + p * lhs.cs].bf16_bits() } else { 0 };
        }
    }
}

/// `dst[i] = bf16(src[i])`, 32 at a time with `vcvtne2ps2bf16` (round to nearest even; the
/// instruction treats f32 denormals as 0), the tail one by one.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_row<T: Operand>(src: &[T], dst: &mut [u16]) {
    use std::arch::x86_64::{__m512i, _mm512_cvtne2ps_pbh, _mm512_storeu_si512};
    debug_assert!(dst.len() >= src.len());
    let chunks = src.len() / 32;
    for c in 0..chunks {
        let lo = load16(src.as_ptr().add(32 * c));
        let hi = load16(src.as_ptr().add(32 * c + 16));
        let packed = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(dst.as_mut_ptr().add(32 * c) as *mut __m512i, std::mem::transmute::<_, __m512i>(packed));
    }
    for p in 32 * chunks..src.len() {
        dst[p] = src[p].bf16_bits();
    }
}

/// What a kernel supplies to [`gemm`]: a 32 × 32 block from packed operands.
pub(super) trait MicroKernel: Sync {
    /// Called on a thread before its first block of a band (e.g. to load the tile configuration).
    ///
    /// # Safety
    /// Paired with [`MicroKernel::end_band`] on the same thread.
    unsafe fn begin_band(&self) {}
    /// Called after the band's last block.
    ///
    /// # Safety
    /// After [`MicroKernel::begin_band`] on the same thread.
    unsafe fn end_band(&self) {}
    /// `c [+]= a[0..32, :] · rhs[:, 32 columns]` over `ksteps` steps of 32: `a` a bf16 band of 32
    /// rows (`stride_a` bytes each), `b0` and `b1` the two 16-column panels (`ksteps` consecutive
    /// 1 KiB steps each), `c` 32 rows of 32 f32, `stride_c` bytes apart (read first when `accumulate`).
    ///
    /// # Safety
    /// The pointers cover what the description says, inside [`begin_band`](MicroKernel::begin_band).
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(&self, a: *const u16, stride_a: usize, b0: *const u16, b1: *const u16, ksteps: usize, c: *mut f32, stride_c: usize, accumulate: bool);
}

/// `dst = [dst +] scale · bf16(lhs) · bf16(rhs) [+ scale · bf16(low-rank term)]` through `kernel`'s
/// 32 × 32 blocks. Threads split the rows in bands of 32; every output element is computed by one
/// thread over k in order, so the result does not depend on the thread count.
///
/// # Safety
/// As [`super::gemm_on`] (m, n, k ≥ 1); the kernel's hardware is available.
pub(super) unsafe fn gemm<K: MicroKernel, L: Operand, R: Operand>(kernel: &K, args: GemmArgs<L, R>, low_rank: Option<LowRank>) {
    let GemmArgs { m, n, k, dst, dst_rs, dst_cs, accumulate, scale, lhs, rhs, parallel } = args;
    debug_assert!(m > 0 && n > 0 && k > 0, "the caller handles empty products");
    debug_assert!(low_rank.is_none_or(|t| t.r > 0 && t.r <= KSTEP), "a low-rank term has 1 ..= 32 columns");
    let full_k = k;
    for k0 in (0..k).step_by(KC) {
        // The k blocks after the first add onto dst; the last carries the low-rank term.
        let accumulate = accumulate || k0 > 0;
        let low_rank = low_rank.filter(|_| k0 + KC >= full_k);
        let lhs = MatView { data: &lhs.data[k0 * lhs.cs..], rs: lhs.rs, cs: lhs.cs };
        let rhs = MatView { data: &rhs.data[k0 * rhs.rs..], rs: rhs.rs, cs: rhs.cs };
        let k = KC.min(k - k0);
        let (kp, np) = (round_up(k, KSTEP), round_up(n, BLOCK));
        // The low-rank term's step follows the block's own in the band and in every panel.
        let (kp_all, ksteps) = if low_rank.is_some() { (kp + KSTEP, kp / KSTEP + 1) } else { (kp, kp / KSTEP) };
        let tile_len = TILE * KSTEP;
        let mut packed_rhs = vec![0u16; np / TILE * ksteps * tile_len];
        pack_rhs(k, n, rhs, kp, ksteps, &mut packed_rhs);
        if let Some(t) = low_rank {
            pack_rhs(t.r, n, t.rhs, KSTEP, ksteps, &mut packed_rhs[(ksteps - 1) * tile_len..]);
        }
        let bands = m.div_ceil(BLOCK);
        // A transposed lhs is packed whole, up front; any other, band by band in the band's task.
        let packed_lhs = (lhs.rs == 1 && lhs.cs != 1).then(|| {
            let mut all = vec![0u16; bands * BLOCK * kp_all];
            pack_lhs_transposed(m, k, lhs, kp, kp_all, &mut all);
            if let Some(t) = low_rank {
                for ib in 0..bands {
                    pack_lhs_band(ib * BLOCK, m, t.r, t.lhs, KSTEP, kp_all, &mut all[ib * BLOCK * kp_all + kp..]);
                }
            }
            all
        });
        let dst = SharedMut(dst);
        let band = |ib: usize| {
            kernel.begin_band();
            let mut own = Vec::new();
            let a: &[u16] = match &packed_lhs {
                Some(all) => &all[ib * BLOCK * kp_all..(ib + 1) * BLOCK * kp_all],
                None => {
                    own.resize(BLOCK * kp_all, 0u16);
                    pack_lhs_band(ib * BLOCK, m, k, lhs, kp, kp_all, &mut own);
                    if let Some(t) = low_rank {
                        pack_lhs_band(ib * BLOCK, m, t.r, t.lhs, KSTEP, kp_all, &mut own[kp..]);
                    }
                    &own
                }
            };
            let mut out = [0f32; BLOCK * BLOCK];
            let rhs_panel = ksteps * tile_len;
            let rows = BLOCK.min(m - ib * BLOCK);
            for jb in 0..np / BLOCK {
                let b0 = packed_rhs.as_ptr().add(2 * jb * rhs_panel);
                let cols = BLOCK.min(n - jb * BLOCK);
                if rows == BLOCK && cols == BLOCK && dst_cs == 1 && scale == 1.0 {
                    // A whole block of a row-major dst: the kernel reads and writes it in place.
                    let c = dst.ptr().add(ib * BLOCK * dst_rs + jb * BLOCK);
                    // SAFETY: rows ib·32.. of dst belong to this task; 32 × 32 elements in range.
                    kernel.block(a.as_ptr(), kp_all * 2, b0, b0.add(rhs_panel), ksteps, c, dst_rs * 4, accumulate);
                    continue;
                }
                // SAFETY: the band holds 32 rows of kp_all bf16; each panel holds ksteps steps.
                kernel.block(a.as_ptr(), kp_all * 2, b0, b0.add(rhs_panel), ksteps, out.as_mut_ptr(), BLOCK * 4, false);
                for r in 0..rows {
                    let i = ib * BLOCK + r;
                    for c in 0..cols {
                        let j = jb * BLOCK + c;
                        // SAFETY: (i, j) inside dst; this band's rows belong to this task only.
                        let d = dst.ptr().add(i * dst_rs + j * dst_cs);
                        let v = scale * out[r * BLOCK + c];
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
            kernel.end_band();
        };
        if parallel && bands > 1 {
            (0..bands).into_par_iter().for_each(|ib| band(ib));
        } else {
            (0..bands).for_each(band);
        }
    }
}
