//! The AMX-BF16 kernel: `tdpbf16ps` on 16 × 16 f32 tiles, k in steps of 32.
//!
//! - Operands are packed once per call into bf16 (round to nearest even), zero-padded to whole
//!   tiles: `lhs` row-major with k padded to 32, `rhs` in the pair-interleaved ("VNNI") layout the
//!   instruction reads, one 16-row × 64-byte tile per (16 columns, 32 k).
//! - One step of the micro-kernel computes a 32 × 32 block of `dst` in four accumulator tiles
//!   (tmm0..3) from two `lhs` tiles (tmm4, tmm5) and two `rhs` tiles (tmm6, tmm7), looping over k
//!   inside one `asm!` block; the block is then scaled into `dst`.
//! - Threads split the rows in bands of 32; every output element is computed by one thread over k
//!   in order, so the result does not depend on the thread count.
//! - Using the tiles needs the OS's consent: XCR0 must enable the tile state and the process asks
//!   for it with `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (Linux 5.16+).

use std::arch::asm;
use std::arch::x86_64::{__cpuid_count, _xgetbv};

use rayon::prelude::*;

use super::super::cpu::{MatView, SharedMut};
use super::to_bf16;

/// Rows and columns of one output tile.
const TILE: usize = 16;
/// k per tile step (32 bf16 = 64 bytes per tile row).
const KSTEP: usize = 32;
/// Rows and columns of the micro-kernel's output block (2 × 2 tiles).
const BLOCK: usize = 2 * TILE;

const SYS_ARCH_PRCTL: usize = 158;
const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
const XFEATURE_XTILEDATA: usize = 18;

/// Whether this CPU has AMX-BF16, the OS enables the tile state, and this process may use it.
pub(crate) fn available() -> bool {
    // CPUID.(7,0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE; CPUID.1:ECX bit 27 = OSXSAVE.
    // SAFETY: cpuid is available on every x86_64 CPU; xgetbv only once OSXSAVE says it is.
    unsafe {
        let leaf7 = __cpuid_count(7, 0);
        let has_amx = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
        // The packing uses AVX512-BF16 (every AMX CPU so far has it; checked all the same).
        let packing = std::is_x86_feature_detected!("avx512bf16") && std::is_x86_feature_detected!("avx512bw");
        if !has_amx || !osxsave || !packing {
            return false;
        }
        // XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA).
        let xcr0 = _xgetbv(0);
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return false;
        }
        request_permission()
    }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: 0 on success (also when already granted).
unsafe fn request_permission() -> bool {
    let ret: isize;
    asm!(
        "syscall",
        inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
        in("rdi") ARCH_REQ_XCOMP_PERM,
        in("rsi") XFEATURE_XTILEDATA,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack)
    );
    ret == 0
}

/// The 64-byte tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn full_tiles() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = TILE as u8;
        }
        Self(c)
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// `rhs` (k × n) as bf16 tiles: for each 16-column block and each 32-deep k step, 16 rows of
/// 32 values, row r holding `(rhs[2r][j], rhs[2r + 1][j])` for the block's 16 columns j.
fn pack_rhs(k: usize, n: usize, rhs: MatView, kp: usize, np: usize) -> Vec<u16> {
    let ksteps = kp / KSTEP;
    let tile_len = TILE * KSTEP;
    let mut out = vec![0u16; np / TILE * ksteps * tile_len];
    out.par_chunks_mut(ksteps * tile_len).enumerate().for_each(|(jb, panel)| {
        for (ks, tile) in panel.chunks_mut(tile_len).enumerate() {
            if rhs.rs == 1 && rhs.cs != 1 && (ks + 1) * KSTEP <= k {
                // rhs is the transpose of a row-major n × k matrix (a weight in `x wᵀ`): its column j
                // holds 32 consecutive k = 16 pairs, one per tile row, at the tile's column j.
                let mut pairs = [0u16; KSTEP];
                for c in 0..TILE.min(n.saturating_sub(jb * TILE)) {
                    let j = jb * TILE + c;
                    let src = &rhs.data[j * rhs.cs + ks * KSTEP..j * rhs.cs + (ks + 1) * KSTEP];
                    // SAFETY: `available` checked AVX512-BF16.
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
                    // SAFETY: 16 values of rows p and p + 1 from column j0 are in range; `available`
                    // checked AVX512-BF16 and AVX512-BW.
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
                            tile[r * KSTEP + 2 * c + half] = to_bf16(rhs.data[p * rhs.rs + j * rhs.cs]);
                        }
                    }
                }
            }
        }
    });
    out
}

/// `dst = [bf16(a0), bf16(b0), bf16(a1), bf16(b1), …]` for 16 values of two rows: one tile row of
/// the pair-interleaved layout.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave_pair(a: &[f32], b: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::{_mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_permutexvar_epi16, _mm512_storeu_si512, __m512i};
    const ORDER: [u16; 32] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];
    let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(b.as_ptr()), _mm512_loadu_ps(a.as_ptr())));
    let order = _mm512_loadu_si512(ORDER.as_ptr() as *const __m512i);
    _mm512_storeu_si512(dst.as_mut_ptr() as *mut __m512i, _mm512_permutexvar_epi16(order, packed));
}

/// Rows `i0 .. i0 + BLOCK` of `lhs` as bf16, row-major with `kp` columns, zero-padded.
fn pack_lhs_band(i0: usize, m: usize, k: usize, lhs: MatView, kp: usize, out: &mut [u16]) {
    for r in 0..BLOCK {
        let row = &mut out[r * kp..(r + 1) * kp];
        let i = i0 + r;
        if i >= m {
            row.fill(0);
            continue;
        }
        if lhs.cs == 1 {
            let src = &lhs.data[i * lhs.rs..i * lhs.rs + k];
            // SAFETY: `available` checked AVX512-BF16.
            unsafe { convert_row(src, &mut row[..k]) };
            row[k..].fill(0);
            continue;
        }
        if lhs.rs == 1 {
            continue; // the transposed case, below
        }
        for (p, v) in row.iter_mut().enumerate() {
            *v = if p < k { to_bf16(lhs.data[i * lhs.rs + p * lhs.cs]) } else { 0 };
        }
    }
    if lhs.rs == 1 && lhs.cs != 1 {
        // lhs is the transpose of a row-major k × m matrix: read its rows (32 contiguous values of
        // the band per k), convert 32 at a time, write them down the band's column p.
        let rows = BLOCK.min(m - i0);
        let mut column = [0u16; BLOCK];
        let mut p = 0;
        if rows == BLOCK {
            // Two k at a time: rows p and p + 1 interleaved give, for each band row, the pair the
            // band holds at (r, p..p + 2): one 32-bit store per row instead of two 16-bit ones.
            let mut pairs = [0u16; 2 * BLOCK];
            while p + 1 < k {
                let a = &lhs.data[i0 + p * lhs.cs..];
                let b = &lhs.data[i0 + (p + 1) * lhs.cs..];
                for half in 0..2 {
                    let at = half * TILE;
                    // SAFETY: `available` checked AVX512-BF16 and AVX512-BW; 16 values of each row.
                    unsafe { interleave_pair(&a[at..at + TILE], &b[at..at + TILE], &mut pairs[2 * at..2 * at + 2 * TILE]) };
                }
                for r in 0..BLOCK {
                    out[r * kp + p] = pairs[2 * r];
                    out[r * kp + p + 1] = pairs[2 * r + 1];
                }
                p += 2;
            }
        }
        while p < k {
            let src = &lhs.data[i0 + p * lhs.cs..];
            if rows == BLOCK {
                // SAFETY: `available` checked AVX512-BF16.
                unsafe { convert_row(&src[..BLOCK], &mut column) };
            } else {
                for r in 0..rows {
                    column[r] = to_bf16(src[r]);
                }
            }
            for r in 0..rows {
                out[r * kp + p] = column[r];
            }
            p += 1;
        }
        for r in 0..rows {
            out[r * kp + k..(r + 1) * kp].fill(0);
        }
    }
}

/// `dst[i] = bf16(src[i])`, 32 at a time with `vcvtne2ps2bf16` (round to nearest even; the
/// instruction treats f32 denormals as 0), the tail one by one.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_row(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::{_mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512, __m512i};
    let chunks = src.len() / 32;
    for c in 0..chunks {
        let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
        let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
        let packed = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(dst.as_mut_ptr().add(32 * c) as *mut __m512i, std::mem::transmute::<_, __m512i>(packed));
    }
    for p in 32 * chunks..src.len() {
        dst[p] = to_bf16(src[p]);
    }
}

/// One 32 × 32 block: `c [+]= lhs_band[0..32, :] · rhs[:, 32 columns]` over `ksteps` steps of 32,
/// `c` being 32 rows of 32 f32, `stride_c` bytes apart (read first when `accumulate`).
///
/// # Safety
/// The tile configuration is loaded on this thread; `a` points at a 32 × (32·ksteps) bf16 band
/// (`stride_a` bytes per row), `b0` / `b1` at `ksteps` consecutive 1 KiB rhs tiles each, `c` at 32
/// writable rows.
// No `#[target_feature]`: AMX features are unstable in Rust; the assembler takes the instructions as they are.
#[allow(clippy::too_many_arguments)]
unsafe fn block(a: *const u16, stride_a: usize, b0: *const u16, b1: *const u16, ksteps: usize, c: *mut f32, stride_c: usize, accumulate: bool) {
    let a1 = a.add(TILE * stride_a / 2);
    let c2 = c.add(TILE * stride_c / 4);
    if accumulate {
        asm!(
            "tileloadd tmm0, [{c} + {sc}*1]",
            "tileloadd tmm1, [{c} + {sc}*1 + 64]",
            "tileloadd tmm2, [{c2} + {sc}*1]",
            "tileloadd tmm3, [{c2} + {sc}*1 + 64]",
            c = in(reg) c,
            c2 = in(reg) c2,
            sc = in(reg) stride_c,
            options(nostack, readonly)
        );
    } else {
        asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    }
    asm!(
        "2:",
        "tileloadd tmm4, [{a0} + {sa}*1]",
        "tileloadd tmm5, [{a1} + {sa}*1]",
        "tileloadd tmm6, [{b0} + {sb}*1]",
        "tileloadd tmm7, [{b1} + {sb}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a0}, 64",
        "add {a1}, 64",
        "add {b0}, 1024",
        "add {b1}, 1024",
        "dec {ks}",
        "jnz 2b",
        // The block is 32 × 32 f32 (128 bytes a row): tiles at (0,0), (0,16), (16,0), (16,16).
        "tilestored [{c} + {sc}*1], tmm0",
        "tilestored [{c} + {sc}*1 + 64], tmm1",
        "tilestored [{c2} + {sc}*1], tmm2",
        "tilestored [{c2} + {sc}*1 + 64], tmm3",
        a0 = inout(reg) a => _,
        a1 = inout(reg) a1 => _,
        b0 = inout(reg) b0 => _,
        b1 = inout(reg) b1 => _,
        ks = inout(reg) ksteps => _,
        sa = in(reg) stride_a,
        sb = in(reg) 64usize,
        c = in(reg) c,
        c2 = in(reg) c2,
        sc = in(reg) stride_c,
        options(nostack)
    );
}

/// Depth of one k block (a multiple of [`KSTEP`]).
const KC: usize = 1024;

/// See [`super::gemm`].
///
/// # Safety
/// As [`super::gemm`] (m, n, k ≥ 1); [`available`] returned true.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    scale: f32,
    lhs: MatView,
    rhs: MatView,
    parallel: bool,
) {
    debug_assert!(m > 0 && n > 0 && k > 0, "the caller handles empty products");
    // k in blocks of KC: one block of packed rhs (KC × n bf16) stays in cache while every band of
    // lhs passes over it; the blocks after the first add onto dst.
    for k0 in (0..k).step_by(KC) {
        let accumulate = accumulate || k0 > 0;
        let lhs = MatView { data: &lhs.data[k0 * lhs.cs..], rs: lhs.rs, cs: lhs.cs };
        let rhs = MatView { data: &rhs.data[k0 * rhs.rs..], rs: rhs.rs, cs: rhs.cs };
        let k = KC.min(k - k0);
        let (kp, np) = (round_up(k, KSTEP), round_up(n, BLOCK));
        let ksteps = kp / KSTEP;
        let packed_rhs = pack_rhs(k, n, rhs, kp, np);
        let dst = SharedMut(dst);
        let band = |ib: usize| {
            let cfg = TileConfig::full_tiles();
            // SAFETY: a valid palette-1 configuration; released below.
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
            let mut a = vec![0u16; BLOCK * kp];
            pack_lhs_band(ib * BLOCK, m, k, lhs, kp, &mut a);
            let mut out = [0f32; BLOCK * BLOCK];
            let rhs_panel = ksteps * TILE * KSTEP;
            let rows = BLOCK.min(m - ib * BLOCK);
            for jb in 0..np / BLOCK {
                let b0 = packed_rhs.as_ptr().add(2 * jb * rhs_panel);
                let cols = BLOCK.min(n - jb * BLOCK);
                if rows == BLOCK && cols == BLOCK && dst_cs == 1 && scale == 1.0 {
                    // A whole block of a row-major dst: the tiles read and write it in place.
                    let c = dst.ptr().add(ib * BLOCK * dst_rs + jb * BLOCK);
                    // SAFETY: rows ib·32.. of dst belong to this task; 32 × 32 elements in range.
                    block(a.as_ptr(), kp * 2, b0, b0.add(rhs_panel), ksteps, c, dst_rs * 4, accumulate);
                    continue;
                }
                // SAFETY: the band holds 32 rows of kp bf16; each panel holds ksteps tiles.
                block(a.as_ptr(), kp * 2, b0, b0.add(rhs_panel), ksteps, out.as_mut_ptr(), BLOCK * 4, false);
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
            asm!("tilerelease", options(nostack, nomem));
        };
        let bands = m.div_ceil(BLOCK);
        if parallel && bands > 1 {
            (0..bands).into_par_iter().for_each(|ib| band(ib));
        } else {
            (0..bands).for_each(band);
        }
    }
}
