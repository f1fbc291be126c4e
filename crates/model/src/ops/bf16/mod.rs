//! Mixed-precision GEMM as PyTorch's CPU autocast does it: `dst = [dst +] scale · lhs · rhs` with
//! both operands rounded to bf16 (round to nearest even) and every product summed in f32. Inputs,
//! outputs and everything around the GEMM stay f32.
//!
//! Kernels, chosen once at run time ([`kernel`]), each one file, all sharing [`pack`]'s operand
//! layout and loop:
//! - [`amx`]: AMX-BF16 tiles (Intel Sapphire Rapids and newer), when the CPU has them, the OS
//!   enables their state and grants the process permission (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! - [`avx512`]: AVX512-BF16 `vdpbf16ps` (AMD Zen 4 and newer; Intel's cores have it too, but
//!   there it is slower than f32, so it is not chosen by default);
//! - none: callers run their f32 GEMM instead, and say so once.
//!
//! `SLORA_BF16_KERNEL=amx|avx512bf16|none` picks another available kernel (benchmarks, tests).
//! [`reference`] is the slow twin every kernel is tested against. Results do not depend on the
//! thread count: each output block is computed by one thread, over k in a fixed order.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod pack;
#[cfg(test)]
pub(crate) mod reference;

/// A low-rank term added inside the product: `dst = [dst +] lhs · rhs + low_lhs · low_rhs`, with
/// `low_lhs` m × r and `low_rhs` r × n (r ≤ 32). It becomes one more k step of the last k block:
/// the sum of the two products is formed in the same f32 accumulators (LoRA's update beside a base
/// held in bf16, at the cost of one k step and no pass of its own over `dst`).
#[derive(Clone, Copy)]
pub(crate) struct LowRank<'a> {
    pub lhs: MatView<'a, f32>,
    pub rhs: MatView<'a, f32>,
    pub r: usize,
}

use std::sync::OnceLock;

use super::gemm_args::GemmArgs;
use super::views::MatView;

/// An element a bf16 kernel reads: f32 (rounded when packed) or bf16 (copied).
pub(crate) trait Operand: Copy + Send + Sync + 'static {
    /// True for `half::bf16`.
    const IS_BF16: bool;
    /// The value as bf16 bits, rounded to nearest even.
    fn bf16_bits(self) -> u16;
}

impl Operand for f32 {
    const IS_BF16: bool = false;
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        to_bf16(self)
    }
}

impl Operand for half::bf16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    fn bf16_bits(self) -> u16 {
        self.to_bits()
    }
}

/// A bf16 kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX-BF16 tiles.
    Amx,
    /// AVX512-BF16 dot products.
    Avx512Bf16,
    /// No bf16 hardware path: f32.
    None,
}

impl std::fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bf16Kernel::Amx => "AMX-BF16",
            Bf16Kernel::Avx512Bf16 => "AVX512-BF16",
            Bf16Kernel::None => "none (f32)",
        })
    }
}

/// The bf16 kernels this machine's hardware can run, fastest first (tests run every one).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
pub fn available_kernels() -> Vec<Bf16Kernel> {
    let mut kernels = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if amx::available() {
            kernels.push(Bf16Kernel::Amx);
        }
        if avx512::available() {
            kernels.push(Bf16Kernel::Avx512Bf16);
        }
    }
    kernels
}

/// Whether AVX512-BF16 beats this CPU's f32 FMA. AMD's cores (Zen 4 and newer) run `vdpbf16ps` at
/// the FMA rate, twice the f32 FLOPs; Intel's issue it on one port where f32 FMA has two, so there it
/// halves the rate (measured on a Sapphire Rapids core: 146 against 294 GFLOP/s on the FFN's GEMMs)
/// and f32 is the faster path. A fixed rule, not a timing: the choice, and so the bits, must not vary
/// from run to run.
fn avx512_bf16_pays() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vendor = std::arch::x86_64::__cpuid(0);
        let bytes: Vec<u8> = [vendor.ebx, vendor.edx, vendor.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        bytes == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The bf16 kernel of this machine, chosen once: AMX where available, else AVX512-BF16 where it
/// pays ([`avx512_bf16_pays`]), else none (f32); or the one `SLORA_BF16_KERNEL` names when its
/// hardware is there.
pub fn kernel() -> Bf16Kernel {
    static KERNEL: OnceLock<Bf16Kernel> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        let available = available_kernels();
        let wanted = match std::env::var("SLORA_BF16_KERNEL").as_deref() {
            Ok("amx") => Some(Bf16Kernel::Amx),
            Ok("avx512bf16") => Some(Bf16Kernel::Avx512Bf16),
            Ok("none") => return Bf16Kernel::None,
            _ => None,
        };
        match wanted {
            Some(k) if available.contains(&k) => k,
            _ => available.into_iter().find(|&k| k == Bf16Kernel::Amx || avx512_bf16_pays()).unwrap_or(Bf16Kernel::None),
        }
    })
}

/// `dst = [dst +] scale · bf16(lhs) · bf16(rhs) [+ scale · bf16(low-rank term)]` with f32 sums,
/// laid out as [`GemmArgs`] says, on `kernel` (this machine's [`kernel`], or another of
/// [`available_kernels`]). Returns `false` (and writes nothing) for `Bf16Kernel::None`, so the
/// caller runs its f32 GEMM.
///
/// # Safety
/// As [`super::cpu::gemm_raw`]: `dst` valid for every (i, j) (reads too when `accumulate`), and not
/// accessed by other threads during the call. m, n and k are at least 1 (`gemm_raw` handles the
/// empty products before it gets here). The kernel's hardware is available.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn gemm_on<L: Operand, R: Operand>(kernel: Bf16Kernel, args: GemmArgs<L, R>, low_rank: Option<LowRank>) -> bool {
    match kernel {
        Bf16Kernel::Amx => pack::gemm(&amx::Amx, args, low_rank),
        Bf16Kernel::Avx512Bf16 => pack::gemm(&avx512::Avx512Bf16, args, low_rank),
        Bf16Kernel::None => return false,
    }
    true
}

/// No bf16 kernels off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn gemm_on<L: Operand, R: Operand>(_: Bf16Kernel, _: GemmArgs<L, R>, _: Option<LowRank>) -> bool {
    false
}

/// f32 → bf16 bits, rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests;
