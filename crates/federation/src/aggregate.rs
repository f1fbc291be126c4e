//! FedAvg aggregation: a running, sample-weighted sum of client states.
//!
//! The server never holds more than one client's returned state plus the running sum: memory is
//! O(model), not O(clients × model). The sum is kept in f64 so the order of clients barely matters
//! numerically; clients are still added in a fixed order (ascending index) so results are bit-stable.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::{FederationError, Result};

/// Trainable tensors by name: what clients download and upload.
pub type State = BTreeMap<String, Tensor>;

/// Running weighted sum Σ nᵢ·θᵢ and Σ nᵢ over the clients of one round.
#[derive(Debug, Default)]
pub struct WeightedAverage {
    sum: BTreeMap<String, Tensor>,
    dtypes: BTreeMap<String, DType>,
    total_weight: u64,
    clients: usize,
}

impl WeightedAverage {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one client's state with weight `samples` (its number of training rows).
    pub fn add(&mut self, state: &State, samples: u64) -> Result<()> {
        if samples == 0 {
            return Err(FederationError::StateMismatch("a client with weight 0 cannot be averaged".into()));
        }
        if self.clients > 0 {
            check_same_layout(&self.sum, state)?;
        }
        for (name, t) in state {
            let weighted = t.to_dtype(DType::F64)?.affine(samples as f64, 0.0)?;
            let next = match self.sum.remove(name) {
                Some(acc) => {
                    if acc.dims() != t.dims() {
                        return Err(FederationError::StateMismatch(format!(
                            "{name}: shape {:?} vs {:?}",
                            acc.dims(),
                            t.dims()
                        )));
                    }
                    (acc + weighted)?
                }
                None => weighted,
            };
            self.sum.insert(name.clone(), next);
            self.dtypes.insert(name.clone(), t.dtype());
        }
        self.total_weight += samples;
        self.clients += 1;
        Ok(())
    }

    /// Number of clients added so far.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// Σ nᵢ over the clients added so far.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The weighted mean Σ nᵢ·θᵢ / Σ nᵢ, each tensor in its original dtype.
    pub fn finish(self) -> Result<State> {
        if self.clients == 0 {
            return Err(FederationError::StateMismatch("no client states to average".into()));
        }
        let inv = 1.0 / self.total_weight as f64;
        let mut out = State::new();
        for (name, sum) in self.sum {
            let dtype = self.dtypes[&name];
            out.insert(name, sum.affine(inv, 0.0)?.to_dtype(dtype)?);
        }
        Ok(out)
    }
}

/// Checks that two states have the same tensor names.
fn check_same_layout(a: &BTreeMap<String, Tensor>, b: &State) -> Result<()> {
    if a.len() != b.len() || a.keys().zip(b.keys()).any(|(x, y)| x != y) {
        let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
        let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        return Err(FederationError::StateMismatch(format!(
            "client states differ in tensor names (missing {missing:?}, extra {extra:?})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn state(a: &[f32], b: &[f32]) -> State {
        let dev = Device::Cpu;
        let mut s = State::new();
        s.insert("x.weight".into(), Tensor::from_slice(a, (a.len(),), &dev).unwrap());
        s.insert("y.bias".into(), Tensor::from_slice(b, (1, b.len()), &dev).unwrap());
        s
    }

    #[test]
    fn weighted_by_sample_counts() -> anyhow::Result<()> {
        let mut avg = WeightedAverage::new();
        avg.add(&state(&[1.0, 2.0], &[10.0]), 10)?;
        avg.add(&state(&[4.0, -1.0], &[0.0]), 30)?;
        avg.add(&state(&[0.0, 0.0], &[5.0]), 60)?;
        assert_eq!((avg.clients(), avg.total_weight()), (3, 100));
        let mean = avg.finish()?;
        // x = (10·[1,2] + 30·[4,-1] + 60·0) / 100 = [1.3, -0.1]; y = (100 + 0 + 300) / 100 = 4.
        assert_eq!(mean["x.weight"].to_vec1::<f32>()?, vec![1.3f32, -0.1]);
        assert_eq!(mean["y.bias"].to_vec2::<f32>()?, vec![vec![4.0f32]]);
        assert_eq!(mean["x.weight"].dtype(), DType::F32);
        Ok(())
    }

    #[test]
    fn equal_weights_give_the_plain_mean_and_one_client_is_identity() -> anyhow::Result<()> {
        let mut avg = WeightedAverage::new();
        avg.add(&state(&[0.1, 0.7], &[3.0]), 5)?;
        let one = avg.finish()?;
        assert_eq!(one["x.weight"].to_vec1::<f32>()?, vec![0.1f32, 0.7]);
        let mut avg = WeightedAverage::new();
        avg.add(&state(&[1.0, 3.0], &[3.0]), 7)?;
        avg.add(&state(&[3.0, 5.0], &[1.0]), 7)?;
        assert_eq!(avg.finish()?["x.weight"].to_vec1::<f32>()?, vec![2.0f32, 4.0]);
        Ok(())
    }

    #[test]
    fn mismatched_states_are_rejected() {
        let mut avg = WeightedAverage::new();
        avg.add(&state(&[1.0, 2.0], &[1.0]), 1).unwrap();
        let mut other = state(&[1.0, 2.0], &[1.0]);
        other.remove("y.bias");
        assert!(avg.add(&other, 1).is_err());
        assert!(avg.add(&state(&[1.0, 2.0, 3.0], &[1.0]), 1).is_err());
        assert!(WeightedAverage::new().finish().is_err());
    }
}
