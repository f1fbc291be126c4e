//! Batched evaluation without a gradient graph: mean loss and accuracy.

use crate::batch::Batch;
use crate::classifier::Classifier;
use crate::error::Result;

/// Loss and accuracy over a set of batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalMetrics {
    /// Mean cross-entropy per row.
    pub loss: f64,
    /// Fraction of rows whose arg-max logit is the label.
    pub accuracy: f64,
    /// Rows evaluated.
    pub rows: usize,
}

/// Evaluates `model` on `batches` (no dropout, no gradient graph). Zero rows give NaN loss and accuracy.
pub fn evaluate<'a, I>(model: &Classifier, batches: I) -> Result<EvalMetrics>
where
    I: IntoIterator<Item = &'a Batch>,
{
    let (mut loss_sum, mut correct, mut rows) = (0f64, 0usize, 0usize);
    for batch in batches {
        let (loss, logits) = model.eval_loss(batch)?;
        let n = batch.len();
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        correct += predicted.iter().zip(batch.label_values()).filter(|(p, l)| p == l).count();
        rows += n;
    }
    let denom = rows as f64;
    Ok(EvalMetrics {
        loss: if rows == 0 { f64::NAN } else { loss_sum / denom },
        accuracy: if rows == 0 { f64::NAN } else { correct as f64 / denom },
        rows,
    })
}
