//! What an honest but curious server can read from one client's update (`upload − download`, as
//! recorded by [`crate::server`] under `federation.record_uploads`): three attacks, each reading
//! only what the server receives, and the precision and recall of what they recover.
//!
//! - **Tokens** ([`recover_tokens`]): with a fresh AdamW each round and no weight decay, a row of the
//!   word-embedding matrix that no token of the client's round touched gets a gradient of exactly
//!   zero, so an update of exactly zero. Rule: the recovered set is the rows whose update is not
//!   all zero. Only a method that sends the embeddings (FFT) can leak this way.
//! - **Labels** ([`recover_labels`]): the output layer's bias gradient under softmax cross-entropy is
//!   Σ (pᵢⱼ − yᵢⱼ) over the rows: negative for a label the client holds (its rows pull its logit up),
//!   positive for one it lacks. Rule (after iDLG, Zhao et al. 2020, for a whole local round): the
//!   recovered set is the labels whose output bias went up.
//! - **Dominant label from the adapter** ([`ShadowProbe`]): for every label, the server trains a
//!   shadow client from the round's download on held-out rows of that label alone, and takes its
//!   update without the head. Rule: a client's dominant label is the label whose shadow update
//!   is most similar (cosine) to the client's update without the head. It reads what the adapter
//!   (the sparse values, the LoRA factors, FFT's backbone) reveals, beyond the head.

use std::collections::BTreeSet;

use candle_core::DType;

use crate::aggregate::State;
use crate::client::{local_update, LocalRound};
use crate::error::Result;
use crate::learner::{Learner, Shard};
pub use slora_privacy::SetRecovery;

/// Every token id of a client's round: its rows' tokens (one local epoch or more reads every row).
pub fn token_set(shard: &Shard) -> BTreeSet<u32> {
    shard.input_ids.iter().flatten().copied().collect()
}

/// Every label a client holds.
pub fn label_set(shard: &Shard) -> BTreeSet<u32> {
    shard.labels.iter().copied().collect()
}

/// The label most of a client's rows carry (the smallest on a tie).
pub fn dominant_label(shard: &Shard) -> Option<u32> {
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for &l in &shard.labels {
        *counts.entry(l).or_default() += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(l, _)| l)
}

/// The word-embedding matrix among an update's tensors, by its architecture-independent name.
pub fn embedding_tensor(update: &State) -> Option<&str> {
    update.keys().map(String::as_str).find(|n| n.ends_with("word_embeddings.weight"))
}

/// The output layer's bias among an update's head tensors: the head bias with one entry per label
/// (`classifier.bias`, RoBERTa's `classifier.out_proj.bias`).
pub fn output_bias<'a>(update: &'a State, num_labels: usize, is_head: impl Fn(&str) -> bool) -> Option<&'a str> {
    update
        .iter()
        .filter(|(n, t)| is_head(n) && n.ends_with(".bias") && t.elem_count() == num_labels)
        .map(|(n, _)| n.as_str())
        .max_by_key(|n| n.contains("classifier"))
}

/// The token attack: the rows of `embedding`'s update that are not all zero (`None` when the
/// update does not carry it).
pub fn recover_tokens(update: &State, embedding: &str) -> Result<Option<BTreeSet<u32>>> {
    let Some(t) = update.get(embedding) else { return Ok(None) };
    let touched = t.to_dtype(DType::F32)?.abs()?.max_keepdim(1)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Some(touched.iter().enumerate().filter(|(_, m)| **m != 0.0).map(|(i, _)| i as u32).collect()))
}

/// The label attack: the labels whose output bias went up (`None` when the update does not carry
/// the bias).
pub fn recover_labels(update: &State, bias: &str) -> Result<Option<BTreeSet<u32>>> {
    let Some(t) = update.get(bias) else { return Ok(None) };
    let d = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(Some(d.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(i, _)| i as u32).collect()))
}

/// Σ a·b and Σ b² over the tensors `keep` admits that both states hold (f32 products, f64 sums).
fn dot(a: &State, b: &State, keep: &impl Fn(&str) -> bool) -> Result<(f64, f64)> {
    let (mut ab, mut bb) = (0f64, 0f64);
    for (name, x) in a.iter().filter(|(n, _)| keep(n)) {
        let Some(y) = b.get(name) else { continue };
        let (x, y) = (x.to_dtype(DType::F32)?, y.to_dtype(DType::F32)?);
        ab += f64::from((&x * &y)?.sum_all()?.to_scalar::<f32>()?);
        bb += f64::from(y.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok((ab, bb))
}

/// The shadow-client probe of one recorded round (see the module docs).
pub struct ShadowProbe {
    /// Per label with held-out rows: the label and its shadow update without the head.
    shadows: Vec<(u32, State)>,
}

/// Client ids of the shadow clients start here, so their seeded row order and dropout never
/// coincide with a real client's.
pub const SHADOW_CLIENT_BASE: usize = 1 << 40;

impl ShadowProbe {
    /// Trains one shadow client per entry of `held_out` (label, rows of that label) for `round`
    /// from `download`, as a real client trains (one local epoch of `batch_size` rows), and keeps
    /// each update without the head.
    pub fn train<L: Learner>(learner: &mut L, download: &State, held_out: &[(u32, Shard)], seed: u64, round: u32, batch_size: usize) -> Result<Self> {
        let mut shadows = Vec::new();
        for (label, rows) in held_out.iter().filter(|(_, s)| !s.is_empty()) {
            let local = LocalRound { seed, round, client: SHADOW_CLIENT_BASE + *label as usize, local_epochs: 1, batch_size };
            let update = local_update(learner, rows, download, &local, || {})?;
            let delta: State = crate::privacy::delta(&update.state, download)?.into_iter().filter(|(n, _)| !learner.is_head(n)).collect();
            shadows.push((*label, delta));
        }
        Ok(Self { shadows })
    }

    /// The labels probed.
    pub fn labels(&self) -> Vec<u32> {
        self.shadows.iter().map(|(l, _)| *l).collect()
    }

    /// The probe's guess of the dominant label behind `update` (a client's upload − download):
    /// the label whose shadow update has the highest cosine similarity to the update without
    /// the head (`None`: no shadow, or nothing in common).
    pub fn guess(&self, update: &State, is_head: impl Fn(&str) -> bool) -> Result<Option<u32>> {
        let keep = |n: &str| !is_head(n);
        let (_, own) = dot(update, update, &keep)?;
        let mut best: Option<(f64, u32)> = None;
        for (label, shadow) in &self.shadows {
            let (ab, bb) = dot(update, shadow, &keep)?;
            if own == 0.0 || bb == 0.0 {
                continue;
            }
            let cosine = ab / (own.sqrt() * bb.sqrt());
            if best.is_none_or(|(c, _)| cosine > c) {
                best = Some((cosine, *label));
            }
        }
        Ok(best.map(|(_, l)| l))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn state(values: &[(&str, Vec<f32>, (usize, usize))]) -> State {
        values.iter().map(|(n, v, s)| (n.to_string(), Tensor::from_vec(v.clone(), *s, &Device::Cpu).unwrap())).collect()
    }

    #[test]
    fn the_token_and_label_rules_read_exact_zeros_and_signs() -> anyhow::Result<()> {
        let update = state(&[
            ("bert.embeddings.word_embeddings.weight", vec![0.0, 0.0, 1e-9, 0.0, 0.0, 0.0, -3.0, 0.0], (4, 2)),
            ("classifier.bias", vec![0.1, -0.2, 0.0, 0.3, 0.1, -0.1, 0.0, 0.0], (1, 8)),
        ]);
        let emb = embedding_tensor(&update).unwrap();
        assert_eq!(recover_tokens(&update, emb)?.unwrap(), BTreeSet::from([1, 3]));
        let bias = output_bias(&update, 8, |n| n.starts_with("classifier")).unwrap();
        assert_eq!(recover_labels(&update, bias)?.unwrap(), BTreeSet::from([0, 3, 4]));
        assert_eq!(recover_tokens(&State::new(), emb)?, None);
        let r = SetRecovery::of(&BTreeSet::from([0, 3, 4]), &BTreeSet::from([3, 4, 5, 6]));
        assert_eq!((r.precision(), r.recall()), (Some(2.0 / 3.0), Some(0.5)));
        assert_eq!(SetRecovery::of(&BTreeSet::new(), &BTreeSet::from([1])).precision(), None);
        Ok(())
    }

    /// On the toy model (which trains its token weights: its "embeddings"), the token rows a
    /// client's round touched are exactly its tokens, and the bias rule beats chance on skewed
    /// clients.
    #[test]
    fn on_a_toy_run_the_token_attack_is_exact_and_the_label_attack_beats_chance() -> anyhow::Result<()> {
        use crate::toy::{toy_data, toy_vocab, ToyLearner};
        let (clients, _) = toy_data(6, 4, 30);
        let mut learner = ToyLearner::new(toy_vocab(4), 4, 5.0);
        let download = learner.trainable_state()?;
        let (mut precision, mut chance, mut n) = (0.0, 0.0, 0.0);
        for (c, shard) in clients.iter().enumerate() {
            let local = LocalRound { seed: 1, round: 1, client: c, local_epochs: 1, batch_size: 8 };
            let up = local_update(&mut learner, shard, &download, &local, || {})?;
            let delta = crate::privacy::delta(&up.state, &download)?;
            // The toy's weight rows are per token: its "embedding" tensor.
            let rows = delta["toy.weight"].abs()?.max_keepdim(1)?.flatten_all()?.to_vec1::<f32>()?;
            let touched: BTreeSet<u32> = rows.iter().enumerate().filter(|(_, m)| **m != 0.0).map(|(i, _)| i as u32).collect();
            assert_eq!(touched, token_set(shard), "client {c}");
            let labels = recover_labels(&delta, "toy.bias")?.unwrap();
            let r = SetRecovery::of(&labels, &label_set(shard));
            precision += r.precision().unwrap_or(0.0);
            chance += label_set(shard).len() as f64 / 4.0;
            n += 1.0;
        }
        assert!(precision / n > chance / n, "precision {} vs chance {}", precision / n, chance / n);
        Ok(())
    }
}
