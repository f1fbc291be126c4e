//! A padded batch of token-id rows with attention mask, token types (all 0) and labels.

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// Token ids padded to the longest row (right padding), as `[B, T]` u32 tensors, and `[B]` labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` token ids.
    pub input_ids: Tensor,
    /// `[B, T]` 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `[B, T]` token types (0 everywhere for single sentences).
    pub token_type_ids: Tensor,
    /// `[B]` class ids.
    pub labels: Tensor,
    label_values: Vec<u32>,
    max_token_id: u32,
}

impl Batch {
    /// Pads `rows` to the longest one with `pad_token_id` and builds the attention mask.
    /// Errors on an empty batch, an empty row, or a label count different from the row count.
    pub fn collate<R: AsRef<[u32]>>(rows: &[R], labels: &[u32], pad_token_id: u32) -> Result<Self> {
        if rows.is_empty() {
            return Err(ModelError::invalid("cannot collate an empty batch"));
        }
        if rows.len() != labels.len() {
            return Err(ModelError::invalid(format!("batch has {} rows but {} labels", rows.len(), labels.len())));
        }
        if let Some(i) = rows.iter().position(|r| r.as_ref().is_empty()) {
            return Err(ModelError::invalid(format!("batch row {i} has no tokens")));
        }
        let t = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
        let b = rows.len();
        let mut ids = vec![pad_token_id; b * t];
        let mut mask = vec![0u32; b * t];
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            ids[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].fill(1);
        }
        let dev = Device::Cpu;
        Self::from_parts(
            Tensor::from_vec(ids, (b, t), &dev)?,
            Tensor::from_vec(mask, (b, t), &dev)?,
            Tensor::zeros((b, t), candle_core::DType::U32, &dev)?,
            labels,
        )
    }

    /// A batch from already padded `[B, T]` tensors (any integer dtype) and labels.
    pub fn from_parts(input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor, labels: &[u32]) -> Result<Self> {
        let u32 = candle_core::DType::U32;
        let (input_ids, attention_mask, token_type_ids) =
            (input_ids.to_dtype(u32)?, attention_mask.to_dtype(u32)?, token_type_ids.to_dtype(u32)?);
        let (b, _t) = input_ids.dims2()?;
        if attention_mask.dims() != input_ids.dims() || token_type_ids.dims() != input_ids.dims() {
            return Err(ModelError::invalid("input_ids, attention_mask and token_type_ids must have the same shape"));
        }
        if labels.len() != b {
            return Err(ModelError::invalid(format!("batch has {b} rows but {} labels", labels.len())));
        }
        let max_token_id = input_ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        Ok(Self {
            input_ids,
            attention_mask,
            token_type_ids,
            labels: Tensor::from_slice(labels, b, &Device::Cpu)?,
            label_values: labels.to_vec(),
            max_token_id,
        })
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.label_values.len()
    }

    /// Always false for a collated batch.
    pub fn is_empty(&self) -> bool {
        self.label_values.is_empty()
    }

    /// Padded row length `T`.
    pub fn seq_len(&self) -> usize {
        self.input_ids.dims()[1]
    }

    /// The labels as plain values.
    pub fn label_values(&self) -> &[u32] {
        &self.label_values
    }

    /// The largest token id in the batch.
    pub fn max_token_id(&self) -> u32 {
        self.max_token_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collate_pads_right_and_masks() {
        let rows: Vec<Vec<u32>> = vec![vec![101, 7, 102], vec![101, 102]];
        let b = Batch::collate(&rows, &[1, 0], 0).unwrap();
        assert_eq!(b.input_ids.to_vec2::<u32>().unwrap(), vec![vec![101, 7, 102], vec![101, 102, 0]]);
        assert_eq!(b.attention_mask.to_vec2::<u32>().unwrap(), vec![vec![1, 1, 1], vec![1, 1, 0]]);
        assert_eq!(b.token_type_ids.to_vec2::<u32>().unwrap(), vec![vec![0; 3], vec![0; 3]]);
        assert_eq!(b.max_token_id(), 102);
        assert!(Batch::collate(&rows, &[1], 0).is_err());
        assert!(Batch::collate::<Vec<u32>>(&[], &[], 0).is_err());
    }
}
