//! Custom candle ops with hand-written backward, working on contiguous f32 CPU slices.
//!
//! candle-nn's fused LayerNorm and softmax have no backward, and candle's matmul backward always
//! computes the weight gradient, frozen or not. Every op here has a fused forward, a fused
//! backward, and a composed twin (`*_slow` or candle's own op) its tests compare against.

pub mod bf16;
mod cpu;
mod gemm_args;
mod math;
mod views;

pub mod attention;
pub mod dropout;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod lora_linear;
pub mod softmax;
pub mod sparse_linear;

pub use attention::{attention, attention_slow, AttentionDropout};
pub use dropout::dropout;
pub use gelu::{gelu_erf, gelu_tanh};
pub use layer_norm::{layer_norm, layer_norm_slow, residual_layer_norm};
pub use linear::{frozen_linear, frozen_linear_at, frozen_linear_slow, linear, linear_at};
pub use lora_linear::{lora_linear, lora_linear_at, lora_linear_slow};
pub use softmax::{softmax_last_dim, softmax_last_dim_slow};
pub use sparse_linear::{sparse_delta_linear, sparse_delta_linear_at, sparse_delta_linear_slow};

#[cfg(test)]
pub(crate) mod test_util;

pub(crate) use cpu::slice as cpu_slice;
