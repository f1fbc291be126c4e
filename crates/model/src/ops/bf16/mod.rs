//! Mixed-precision GEMM as PyTorch's CPU autocast does it: `dst = [dst +] scale · lhs · rhs` with
//! both operands rounded to bf16 (round to nearest even) and every product summed in f32. Inputs,
//! outputs and everything around the GEMM stay f32.
//!
//! Kernels, chosen once at run time ([`kernel`]):
//! - [`amx`]: AMX-BF16 tiles (Intel Sapphire Rapids and newer), when the CPU has them, the OS
//!   enables their state and grants the process permission (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! - none: callers run their f32 GEMM instead, and say so once.
//!
//! [`reference`] is the slow twin every kernel is tested against. Results do not depend on the
//! thread count: each output block is computed by one thread, over k in a fixed order.

#[cfg(test)]
pub(crate) mod reference;
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;

use std::sync::OnceLock;

use super::cpu::MatView;

/// The bf16 kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX-BF16 tiles.
    Amx,
    /// No bf16 hardware path: f32.
    None,
}

impl std::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bf16Kernel::Amx => "AMX-BF16",
            Bf16Kernel::None => "none (f32)",
        })
    }
}

/// The bf16 kernel of this machine, detected once.
pub fn kernel() -> Bf16Kernel {
    static KERNEL: OnceLock<Bf16Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if amx::available() {
            return Bf16Kernel::Amx;
        }
        Bf16Kernel::None
    })
}

/// `dst = [dst +] scale · bf16(lhs) · bf16(rhs)` with f32 sums, element (i, j) of `dst` at
/// `dst.add(i * dst_rs + j * dst_cs)`. Returns `false` (and writes nothing) when this CPU has no bf16
/// kernel, so the caller runs its f32 GEMM.
///
/// # Safety
/// As [`super::cpu::gemm_raw`]: `dst` valid for every (i, j) (reads too when `accumulate`), and not
/// accessed by other threads during the call. m, n and k are at least 1 (`gemm_raw` handles the
/// empty products before it gets here).
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
) -> bool {
    match kernel() {
        #[cfg(target_arch = "x86_64")]
        Bf16Kernel::Amx => {
            amx::gemm(m, n, k, dst, dst_rs, dst_cs, accumulate, scale, lhs, rhs, parallel);
            true
        }
        _ => false,
    }
}

/// f32 → bf16 bits, rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests;
