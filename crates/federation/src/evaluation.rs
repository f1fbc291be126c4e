//! Evaluation of the global model on a shard, in length-sorted batches.

use crate::error::Result;
use crate::learner::{EvalSums, Learner, Shard};

/// Test accuracy and mean loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    sums: EvalSums,
}

impl Evaluation {
    /// Fraction of rows classified correctly.
    pub fn accuracy(&self) -> f64 {
        self.sums.correct as f64 / self.sums.rows as f64
    }
    /// Mean cross-entropy per row.
    pub fn mean_loss(&self) -> f64 {
        self.sums.loss_sum / self.sums.rows as f64
    }
    /// Rows evaluated.
    pub fn rows(&self) -> u64 {
        self.sums.rows
    }
    /// Rows classified correctly.
    pub fn correct(&self) -> u64 {
        self.sums.correct
    }
}

/// Row indices of `shard` in batches of rows of similar length (sorted by length, then index), so that
/// padding to the longest row wastes little. Deterministic.
pub fn length_sorted_batches(shard: &Shard, batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..shard.len()).collect();
    order.sort_by_key(|&i| (shard.input_ids[i].len(), i));
    order.chunks(batch_size).map(<[usize]>::to_vec).collect()
}

/// Evaluates the learner's current state on `shard` in the given batches (sums in a fixed order).
pub fn evaluate<L: Learner>(learner: &L, shard: &Shard, batches: &[Vec<usize>]) -> Result<Evaluation> {
    let mut sums = EvalSums::default();
    for rows in batches {
        let ids: Vec<&[u32]> = rows.iter().map(|&i| shard.input_ids[i].as_slice()).collect();
        let labels: Vec<u32> = rows.iter().map(|&i| shard.labels[i]).collect();
        let b = learner.eval_batch(&ids, &labels)?;
        sums.loss_sum += b.loss_sum;
        sums.correct += b.correct;
        sums.rows += b.rows;
    }
    Ok(Evaluation { sums })
}
