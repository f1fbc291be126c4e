//! The AVX512-BF16 kernel: `vdpbf16ps` (Zen 4, Cooper Lake and newer Intel), 16 f32 lanes, each the
//! sum of a pair of bf16 products per instruction.
//!
//! The packed `rhs` panels of [`super::pack`] are this instruction's operand row by row: row r of a
//! panel step holds the pairs `(rhs[2r][j], rhs[2r + 1][j])` of 16 columns j, and the matching `lhs`
//! pair `(a[i][2r], a[i][2r + 1])` is one 32-bit word broadcast to all lanes. A 32 × 32 block runs
//! as four groups of 8 rows × 32 columns: 16 accumulators, two panel rows and a broadcast in the
//! 32 vector registers.

use std::arch::x86_64::{__m512bh, __m512i, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_ps};

use super::pack::{MicroKernel, BLOCK, KSTEP, TILE};

/// Whether this CPU has AVX512-BF16 (and the AVX-512 parts the packing uses).
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16")
}

/// Rows of one register block.
const ROWS: usize = 8;

/// The AVX512-BF16 micro-kernel (construct it only where [`available`] returned true).
pub(crate) struct Avx512Bf16;

impl MicroKernel for Avx512Bf16 {
    unsafe fn block(&self, a: *const u16, stride_a: usize, b0: *const u16, b1: *const u16, ksteps: usize, c: *mut f32, stride_c: usize, accumulate: bool) {
        for group in 0..BLOCK / ROWS {
            rows8(a.byte_add(group * ROWS * stride_a), stride_a, b0, b1, ksteps, c.byte_add(group * ROWS * stride_c), stride_c, accumulate);
        }
    }
}

/// `c [+]= a[0..8, :] · rhs[:, 32 columns]`: see [`MicroKernel::block`], for 8 rows.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows8(a: *const u16, stride_a: usize, b0: *const u16, b1: *const u16, ksteps: usize, c: *mut f32, stride_c: usize, accumulate: bool) {
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            let ci = c.byte_add(i * stride_c);
            *row = [_mm512_loadu_ps(ci), _mm512_loadu_ps(ci.add(TILE))];
        }
    }
    for ks in 0..ksteps {
        let (p0, p1, ak) = (b0.add(ks * TILE * KSTEP), b1.add(ks * TILE * KSTEP), a.add(ks * KSTEP));
        for r in 0..TILE {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(p0.add(r * KSTEP) as *const __m512i));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(p1.add(r * KSTEP) as *const __m512i));
            for (i, row) in acc.iter_mut().enumerate() {
                let pair = (ak.byte_add(i * stride_a).add(2 * r) as *const i32).read_unaligned();
                let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], x, w0);
                row[1] = _mm512_dpbf16_ps(row[1], x, w1);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let ci = c.byte_add(i * stride_c);
        _mm512_storeu_ps(ci, row[0]);
        _mm512_storeu_ps(ci.add(TILE), row[1]);
    }
}
