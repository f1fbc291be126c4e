//! Communication accounting from the tensors actually exchanged.
//!
//! Download = the global trainable state the server sends; upload = the trainable state a client
//! returns. What "trainable" means is the model's mode, so the count follows automatically: full
//! fine-tuning sends every parameter; LoRA sends `lora_A`, `lora_B` and the head; sparse sends each
//! matrix's masked values (`<module>.sparse_delta`, nnz entries — the positions derive from the mask
//! seed, which the server sends once) and the head. An f32 element is 4 bytes.

use crate::aggregate::State;

/// Bytes on the wire for `state`: Σ elements × dtype size.
pub fn state_bytes(state: &State) -> u64 {
    state.values().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum()
}

/// Bytes of the tensors whose names satisfy `keep` (e.g. only the head, for a report).
pub fn state_bytes_where(state: &State, keep: impl Fn(&str) -> bool) -> u64 {
    state
        .iter()
        .filter(|(n, _)| keep(n))
        .map(|(_, t)| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn counts_four_bytes_per_f32_element() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let mut s = State::new();
        // A sparse model: two matrices with 37 and 5 masked values, a 20x384 classifier with bias.
        s.insert("l0.query.sparse_delta".into(), Tensor::zeros(37, DType::F32, &dev)?);
        s.insert("l0.value.sparse_delta".into(), Tensor::zeros(5, DType::F32, &dev)?);
        s.insert("classifier.weight".into(), Tensor::zeros((20, 384), DType::F32, &dev)?);
        s.insert("classifier.bias".into(), Tensor::zeros(20, DType::F32, &dev)?);
        assert_eq!(state_bytes(&s), (37 + 5 + 20 * 384 + 20) * 4);
        assert_eq!(state_bytes_where(&s, |n| n.starts_with("classifier.")), (20 * 384 + 20) * 4);
        s.insert("half".into(), Tensor::zeros(3, DType::F64, &dev)?);
        assert_eq!(state_bytes(&s), (37 + 5 + 20 * 384 + 20) * 4 + 24);
        Ok(())
    }
}
