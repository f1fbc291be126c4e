//! The arguments of one GEMM, in one struct: the f32 entry (`cpu::gemm_raw`), the bf16 dispatch
//! (`bf16::gemm_on`) and the bf16 kernels' loop (`bf16::pack::gemm`) pass the same product down,
//! and each adds only what is its own (precision, kernel, low-rank term) beside it.

use super::views::MatView;

/// `dst = [dst +] scale · lhs · rhs`, with `lhs` m × k, `rhs` k × n, and element (i, j) of `dst`
/// at `dst.add(i * dst_rs + j * dst_cs)`. Plain data: the functions that take it are `unsafe` and
/// say what `dst` must be valid for. The operands are f32, or bf16 for a weight held in bf16
/// (which only the bf16 kernels read).
pub(crate) struct GemmArgs<'a, L = f32, R = f32> {
    /// Rows of `dst` and `lhs`.
    pub m: usize,
    /// Columns of `dst` and `rhs`.
    pub n: usize,
    /// The summed dimension: columns of `lhs`, rows of `rhs`.
    pub k: usize,
    pub dst: *mut f32,
    pub dst_rs: usize,
    pub dst_cs: usize,
    /// Adds the product onto `dst` (which is then read) instead of overwriting it.
    pub accumulate: bool,
    pub scale: f32,
    pub lhs: MatView<'a, L>,
    pub rhs: MatView<'a, R>,
    /// Multi-threaded (rayon's pool); `false` for a GEMM inside an already parallel loop.
    pub parallel: bool,
}
