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

/// A digest of `state`: sha256 over every tensor's name, dtype, shape and bytes, in name order.
/// A client echoes the digest of the state it trained from, so the server can tell a reply to
/// this round's state from a stale or replayed one.
pub fn state_digest(state: &State) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, t) in state {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype(), t.dims()).as_bytes());
        let bytes: Vec<u8> = match t.dtype() {
            candle_core::DType::F32 => t.flatten_all().and_then(|f| f.to_vec1::<f32>()).map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()).unwrap_or_default(),
            _ => t.to_dtype(candle_core::DType::F64).and_then(|f| f.flatten_all()).and_then(|f| f.to_vec1::<f64>()).map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect()).unwrap_or_default(),
        };
        h.update(&bytes);
    }
    hex::encode(h.finalize())
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
