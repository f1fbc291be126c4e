//! RoBERTa's position ids: counted over the non-padding tokens, starting after the padding row.
//!
//! Ports transformers' `create_position_ids_from_input_ids` (modeling_roberta.py):
//! `mask = ids != padding_idx; positions = cumsum(mask) * mask + padding_idx`. A row's first token
//! sits at `padding_idx + 1` (2 for RoBERTa's `<pad>` = 1) and every pad at `padding_idx`, whichever
//! side the padding is on. BERT-style models use `0..T` instead (`Encoder::forward`).

use candle_core::Tensor;

use crate::error::Result;

/// `[B, T]` u32 position ids of `[B, T]` token ids (any integer dtype) under RoBERTa's rule.
pub fn position_ids_from_input_ids(input_ids: &Tensor, padding_idx: u32) -> Result<Tensor> {
    let ids = input_ids.to_dtype(candle_core::DType::U32)?;
    let (b, t) = ids.dims2()?;
    // Small and integer: a host loop, no gradient, cheaper than a cumsum graph.
    let mut out = Vec::with_capacity(b * t);
    for row in ids.to_vec2::<u32>()? {
        let mut count = 0u32;
        for id in row {
            if id == padding_idx {
                out.push(padding_idx);
            } else {
                count += 1;
                out.push(padding_idx + count);
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, t), input_ids.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn positions(rows: Vec<Vec<u32>>, padding_idx: u32) -> Vec<Vec<u32>> {
        let (b, t) = (rows.len(), rows[0].len());
        let ids = Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu).unwrap();
        position_ids_from_input_ids(&ids, padding_idx).unwrap().to_vec2::<u32>().unwrap()
    }

    #[test]
    fn right_padded_rows_start_after_the_padding_row() {
        // <s> a b </s> <pad> <pad> with <pad> = 1.
        let got = positions(vec![vec![0, 40, 41, 2, 1, 1], vec![0, 40, 41, 42, 43, 2]], 1);
        assert_eq!(got, vec![vec![2, 3, 4, 5, 1, 1], vec![2, 3, 4, 5, 6, 7]]);
    }

    #[test]
    fn left_padding_and_other_padding_ids_follow_the_same_rule() {
        assert_eq!(positions(vec![vec![1, 1, 0, 9, 2]], 1), vec![vec![1, 1, 2, 3, 4]]);
        assert_eq!(positions(vec![vec![5, 6, 0, 0]], 0), vec![vec![1, 2, 0, 0]]);
    }
}
