//! The AMX-BF16 kernel: `tdpbf16ps` on 16 × 16 f32 tiles, k in steps of 32.
//!
//! - Operands are packed by [`super::pack`]: a panel step of `rhs` is one 16-row × 64-byte tile in
//!   the pair-interleaved layout the instruction reads.
//! - One step of the micro-kernel computes a 32 × 32 block of `dst` in four accumulator tiles
//!   (tmm0..3) from two `lhs` tiles (tmm4, tmm5) and two `rhs` tiles (tmm6, tmm7), looping over k
//!   inside one `asm!` block; the block is then scaled into `dst`.
//! - Using the tiles needs the OS's consent: XCR0 must enable the tile state and the process asks
//!   for it with `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (Linux 5.16+).

use std::arch::asm;
use std::arch::x86_64::{__cpuid_count, _xgetbv};

use super::pack::{MicroKernel, TILE};

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

/// The AMX micro-kernel (construct it only where [`available`] returned true).
pub(crate) struct Amx;

impl MicroKernel for Amx {
    unsafe fn begin_band(&self) {
        let cfg = TileConfig::full_tiles();
        // SAFETY: a valid palette-1 configuration; released in `end_band`.
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    }

    unsafe fn end_band(&self) {
        asm!("tilerelease", options(nostack, nomem));
    }

    // No `#[target_feature]`: AMX features are unstable in Rust; the assembler takes the instructions as they are.
    unsafe fn block(&self, a: *const u16, stride_a: usize, b0: *const u16, b1: *const u16, ksteps: usize, c: *mut f32, stride_c: usize, accumulate: bool) {
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
}
