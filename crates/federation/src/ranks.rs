//! Heterogeneous client ranks (HetLoRA, FlexLoRA): client `c` trains a rank-`rᵢ` adapter, where
//! `rᵢ = ranks[c % ranks.len()]`, beside a global adapter of rank `r = max rᵢ`.
//!
//! The server sends client `c` the first `rᵢ` rank components of every LoRA factor (A's rows, B's
//! columns, [`truncate`]) and the client sends the same shapes back; the server zero-pads a reply to
//! the global rank ([`pad`]) before it enters the round's sums. Both directions are charged as the
//! truncated tensors they are. What the server does with the padded replies is the method:
//! - plain FedAvg of the padded factors is HetLoRA-style zero-padding, the naive scheme: a
//!   component only the rank-16 clients train is averaged with the zeros of every other client,
//!   and `mean(B)·mean(A)` is not the clients' average update either;
//! - FlexLoRA averages the products `Bᵢ·Aᵢ` and re-factors them by SVD ([`crate::exact`]), so
//!   the first `rᵢ` components a client receives are the best rank-`rᵢ` approximation of the
//!   aggregate (SVD components come sorted by singular value);
//! - SLoRA's Stage 2 starts from the decomposition at rank `r`, so each client's first download is
//!   its rank's truncation of the same SVD; Stage 2 then aggregates by zero-padding.
//!
//! A client holds the padded factors in a model of rank `r`. The components past `rᵢ` are zero in
//! both A and B, so their gradients are exactly zero (∂L/∂A[j] ∝ B[:, j], ∂L/∂B[:, j] ∝ A[j]) and
//! AdamW leaves them at zero: the model is a rank-`rᵢ` LoRA with scale `lora_alpha / r`, one scale
//! for every client, so a product means the same update on every client.

use candle_core::Tensor;

use crate::aggregate::State;
use crate::alternating::{LORA_A, LORA_B};
use crate::error::{FederationError, Result};

/// The rank of client `client` under `ranks` (cycled over clients), or `None` when every client
/// trains the global rank (`ranks` empty).
pub fn rank_of(ranks: &[usize], client: usize) -> Option<usize> {
    (!ranks.is_empty()).then(|| ranks[client % ranks.len()])
}

/// The axis of `name` that indexes rank components: 0 for A (`[r, in]`), 1 for B (`[out, r]`),
/// `None` for a tensor that is not a LoRA factor.
fn rank_axis(name: &str) -> Option<usize> {
    if name.ends_with(LORA_A) {
        Some(0)
    } else if name.ends_with(LORA_B) {
        Some(1)
    } else {
        None
    }
}

/// `state` with every LoRA factor cut to its first `rank` components (A's rows, B's columns); the
/// other tensors as they are. A factor of rank at most `rank` is left whole.
pub fn truncate(state: &State, rank: usize) -> Result<State> {
    state
        .iter()
        .map(|(name, t)| {
            let t = match rank_axis(name) {
                Some(axis) if t.dims()[axis] > rank => t.narrow(axis, 0, rank)?.contiguous()?,
                _ => t.clone(),
            };
            Ok((name.clone(), t))
        })
        .collect()
}

/// `state` with every LoRA factor zero-padded to the rank of the same factor in `like` (A with zero
/// rows below, B with zero columns on the right). A factor wider than `like`'s is refused.
pub fn pad(state: &State, like: &State) -> Result<State> {
    state
        .iter()
        .map(|(name, t)| {
            let (Some(axis), Some(full)) = (rank_axis(name), like.get(name)) else { return Ok((name.clone(), t.clone())) };
            let (have, want) = (t.dims()[axis], full.dims()[axis]);
            let t = match have.cmp(&want) {
                std::cmp::Ordering::Equal => t.clone(),
                std::cmp::Ordering::Less => t.pad_with_zeros(axis, 0, want - have)?,
                std::cmp::Ordering::Greater => {
                    return Err(FederationError::StateMismatch(format!("`{name}` has rank {have}, above the global rank {want}")))
                }
            };
            Ok((name.clone(), t))
        })
        .collect()
}

/// The rank of the LoRA factors in `state` (the smallest, should they differ), `None` without factors.
pub fn state_rank(state: &State) -> Option<usize> {
    state.iter().filter_map(|(name, t)| rank_axis(name).map(|axis| t.dims()[axis])).min()
}

/// The shape `name` has in a rank-`rank` client's upload, given its global shape.
pub fn client_shape(name: &str, global: &[usize], rank: usize) -> Vec<usize> {
    let mut dims = global.to_vec();
    if let Some(axis) = rank_axis(name) {
        dims[axis] = dims[axis].min(rank);
    }
    dims
}

/// Whether `t` is all zeros past its first `rank` components (what a rank-`rank` client's
/// padded factor must be).
pub fn is_zero_past(name: &str, t: &Tensor, rank: usize) -> Result<bool> {
    let Some(axis) = rank_axis(name) else { return Ok(true) };
    let width = t.dims()[axis];
    if width <= rank {
        return Ok(true);
    }
    let tail = t.narrow(axis, rank, width - rank)?;
    Ok(tail.abs()?.max_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn state(r: usize) -> State {
        let dev = Device::Cpu;
        let mut s = State::new();
        let a: Vec<f32> = (0..r * 3).map(|i| i as f32 + 1.0).collect();
        let b: Vec<f32> = (0..2 * r).map(|i| -(i as f32) - 1.0).collect();
        s.insert(format!("m{LORA_A}"), Tensor::from_vec(a, (r, 3), &dev).unwrap());
        s.insert(format!("m{LORA_B}"), Tensor::from_vec(b, (2, r), &dev).unwrap());
        s.insert("classifier.bias".into(), Tensor::from_slice(&[0.5f32, 1.5], 2, &dev).unwrap());
        s
    }

    #[test]
    fn truncation_keeps_the_leading_components_and_padding_restores_the_shape_with_zeros() -> anyhow::Result<()> {
        assert_eq!((rank_of(&[4, 8, 16], 0), rank_of(&[4, 8, 16], 4), rank_of(&[], 3)), (Some(4), Some(8), None));
        let full = state(4);
        let cut = truncate(&full, 2)?;
        assert_eq!(cut[&format!("m{LORA_A}")].to_vec2::<f32>()?, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(cut[&format!("m{LORA_B}")].to_vec2::<f32>()?, vec![vec![-1.0, -2.0], vec![-5.0, -6.0]]);
        assert_eq!(cut["classifier.bias"].to_vec1::<f32>()?, vec![0.5, 1.5]);
        assert_eq!((state_rank(&cut), state_rank(&full)), (Some(2), Some(4)));
        assert_eq!(client_shape(&format!("m{LORA_B}"), &[2, 4], 2), vec![2, 2]);
        // Truncating to a rank above the factors' leaves them whole.
        assert_eq!(truncate(&full, 16)?[&format!("m{LORA_A}")].dims(), &[4, 3]);

        let padded = pad(&cut, &full)?;
        assert_eq!(padded[&format!("m{LORA_A}")].to_vec2::<f32>()?[2..], vec![vec![0.0; 3], vec![0.0; 3]]);
        assert_eq!(padded[&format!("m{LORA_B}")].to_vec2::<f32>()?, vec![vec![-1.0, -2.0, 0.0, 0.0], vec![-5.0, -6.0, 0.0, 0.0]]);
        for (name, t) in &padded {
            assert!(is_zero_past(name, t, 2)?, "{name}");
        }
        assert!(!is_zero_past(&format!("m{LORA_A}"), &full[&format!("m{LORA_A}")], 2)?);
        // The product is the truncated factors' product.
        let p = |s: &State| s[&format!("m{LORA_B}")].matmul(&s[&format!("m{LORA_A}")]).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(p(&padded), p(&cut));
        assert!(pad(&full, &cut).is_err());
        Ok(())
    }
}
