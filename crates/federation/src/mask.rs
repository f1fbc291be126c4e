//! A Stage-1 mask the federation chooses from its data (the "mask round"), instead of a random one.
//!
//! SLoRA draws its sparse mask at random from a seed because picking "important" weights normally
//! needs full fine-tuning. Here the clients pick, and nothing dense ever leaves a client:
//!
//! 1. The server samples `clients_per_round` clients (their own seed stream, so the mask round does
//!    not shift Stage 1's sampling) and broadcasts nothing but the seed (the model is the base).
//! 2. Each sampled client scores every entry of every target matrix on its own data:
//!    `|∂L/∂w ⊙ w|` summed over `batches` batches of `batch_size` rows in a seeded order (first-order
//!    saliency, as in SNIP / movement pruning). The backward pass is dense on the client: compute,
//!    not communication.
//! 3. It uploads, per matrix, only its top-`k` entries (`k` = the configured density's count) as
//!    u32 flat indices plus f32 scores: 8·k bytes.
//! 4. The server turns each client's scores into votes that sum to the client's row count (FedAvg's
//!    weighting), adds the votes up per entry and keeps the `k` entries with the most; ties go by a
//!    seeded random priority. The union of the uploads holds at least `k` entries, so the mask has
//!    exactly `k`, the same count as the random mask.
//! 5. Every client (sampled or not) downloads the mask: `k` u32 indices per matrix.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::seq::SliceRandom;

use crate::error::{FederationError, Result};
use crate::learner::{Learner, Shard};
use crate::seeds::{self, Stream};

/// One matrix the mask is chosen for.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskTarget {
    /// The learner's name of the dense tensor that is scored (e.g. `….query.weight`).
    pub tensor: String,
    /// Entries the mask keeps (`slora_model::sparse::mask_len` of the density).
    pub k: usize,
}

/// Settings of the mask round.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskRoundConfig {
    /// Run seed: client sampling, row order and tie-breaking derive from it.
    pub seed: u64,
    /// Clients that score (1 ..= number of clients).
    pub clients_per_round: usize,
    /// Batches each client scores (at most its whole shard).
    pub batches: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// The matrices, in a fixed order.
    pub targets: Vec<MaskTarget>,
}

/// What one client uploads for one matrix: its top-k entries, indices ascending, with their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskProposal {
    /// Flat indices `row · cols + col`, ascending.
    pub indices: Vec<u32>,
    /// Importance of each index (same order).
    pub scores: Vec<f32>,
}

impl MaskProposal {
    /// Upload size: one u32 index and one f32 score per entry.
    pub fn bytes(&self) -> u64 {
        (self.indices.len() * 4 + self.scores.len() * 4) as u64
    }
}

/// The result of the mask round.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskRoundOutcome {
    /// The global mask per target tensor: `k` flat indices, ascending.
    pub masks: BTreeMap<String, Vec<u32>>,
    /// The clients that scored, ascending.
    pub clients: Vec<usize>,
    /// Bytes one scoring client uploads (all matrices).
    pub bytes_up_per_client: u64,
    /// The largest single upload of one matrix by one client (≤ 8·k of that matrix).
    pub largest_upload: u64,
    /// Bytes every client downloads: the mask as u32 indices.
    pub bytes_down_per_client: u64,
    /// Client seconds: scoring and top-k, summed over the scoring clients.
    pub train_seconds: f64,
    /// Server seconds: merging the proposals.
    pub server_seconds: f64,
}

/// The `k` largest entries of `scores` (ties: lower index first), indices ascending.
pub fn top_k(scores: &[f32], k: usize) -> MaskProposal {
    let k = k.min(scores.len());
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    let better = |a: &u32, b: &u32| scores[*b as usize].total_cmp(&scores[*a as usize]).then(a.cmp(b));
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, better);
    }
    order.truncate(k);
    order.sort_unstable();
    let scores = order.iter().map(|&i| scores[i as usize]).collect();
    MaskProposal { indices: order, scores }
}

/// Merges the clients' proposals for one matrix into a mask of exactly `k` entries (ascending).
///
/// Each proposal's scores are scaled to sum to its client's `weight` (rows), so every client's vote
/// counts like its FedAvg weight whatever the scale of its gradients; an all-zero proposal spreads its
/// weight evenly. Entries with equal totals are ordered by a random priority drawn from `seed`.
pub fn merge_proposals(proposals: &[(MaskProposal, u64)], k: usize, seed: u64) -> Vec<u32> {
    let mut votes: BTreeMap<u32, f64> = BTreeMap::new();
    for (p, weight) in proposals {
        let total: f64 = p.scores.iter().map(|&s| f64::from(s.max(0.0))).sum();
        for (&i, &s) in p.indices.iter().zip(&p.scores) {
            let share = if total > 0.0 { f64::from(s.max(0.0)) / total } else { 1.0 / p.indices.len() as f64 };
            *votes.entry(i).or_insert(0.0) += share * *weight as f64;
        }
    }
    let mut candidates: Vec<(u32, f64)> = votes.into_iter().collect();
    // A seeded shuffle, then a stable sort by votes: equal totals keep the shuffled order.
    candidates.shuffle(&mut seeds::rng(seed, Stream::MaskRound, &[u64::MAX]));
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut mask: Vec<u32> = candidates.into_iter().take(k).map(|(i, _)| i).collect();
    mask.sort_unstable();
    mask
}

/// Runs the mask round (see the module docs). `learner` holds the initial model; its state is left
/// as it was (scoring takes gradients but never steps).
pub fn mask_round<L: Learner>(learner: &mut L, clients: &[Shard], cfg: &MaskRoundConfig) -> Result<MaskRoundOutcome> {
    let bad = |key: &'static str, message: String| FederationError::InvalidConfig { key, message };
    if cfg.clients_per_round == 0 || cfg.clients_per_round > clients.len() {
        return Err(bad("clients_per_round", format!("must be in 1 ..= {} (got {})", clients.len(), cfg.clients_per_round)));
    }
    if cfg.batches == 0 || cfg.batch_size == 0 {
        return Err(bad("mask_batches", format!("batches ({}) and batch size ({}) must be >= 1", cfg.batches, cfg.batch_size)));
    }
    let names: Vec<String> = cfg.targets.iter().map(|t| t.tensor.clone()).collect();
    let mut rng = seeds::rng(cfg.seed, Stream::MaskRound, &[]);
    let mut chosen = rand::seq::index::sample(&mut rng, clients.len(), cfg.clients_per_round).into_vec();
    chosen.sort_unstable();

    let mut proposals: Vec<Vec<(MaskProposal, u64)>> = vec![Vec::new(); cfg.targets.len()];
    let (mut train_seconds, mut largest_upload, mut bytes_up) = (0.0f64, 0u64, 0u64);
    for &client in &chosen {
        let start = Instant::now();
        let shard = &clients[client];
        if shard.is_empty() {
            return Err(FederationError::EmptyClient { client });
        }
        let mut order: Vec<usize> = (0..shard.len()).collect();
        order.shuffle(&mut seeds::rng(cfg.seed, Stream::MaskRound, &[client as u64]));
        order.truncate(cfg.batches * cfg.batch_size);
        let mut sums: Vec<Option<candle_core::Tensor>> = vec![None; names.len()];
        for rows in order.chunks(cfg.batch_size) {
            let ids: Vec<&[u32]> = rows.iter().map(|&i| shard.input_ids[i].as_slice()).collect();
            let labels: Vec<u32> = rows.iter().map(|&i| shard.labels[i]).collect();
            let scores = learner.importance(&ids, &labels, &names)?;
            for (sum, name) in sums.iter_mut().zip(&names) {
                let s = scores.get(name).ok_or_else(|| FederationError::StateMismatch(format!("importance lacks `{name}`")))?;
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + s)?,
                    None => s.clone(),
                });
            }
        }
        bytes_up = 0;
        for ((target, sum), out) in cfg.targets.iter().zip(sums).zip(&mut proposals) {
            let scores = sum.expect("at least one batch").flatten_all()?.to_vec1::<f32>()?;
            let proposal = top_k(&scores, target.k);
            largest_upload = largest_upload.max(proposal.bytes());
            bytes_up += proposal.bytes();
            out.push((proposal, shard.len() as u64));
        }
        train_seconds += start.elapsed().as_secs_f64();
    }
    let server = Instant::now();
    let masks: BTreeMap<String, Vec<u32>> = cfg
        .targets
        .iter()
        .zip(&proposals)
        .enumerate()
        .map(|(i, (t, p))| (t.tensor.clone(), merge_proposals(p, t.k, seeds::derive(cfg.seed, Stream::MaskRound, &[i as u64, 1]))))
        .collect();
    let bytes_down_per_client = masks.values().map(|m| m.len() as u64 * 4).sum();
    Ok(MaskRoundOutcome {
        masks,
        clients: chosen,
        bytes_up_per_client: bytes_up,
        largest_upload,
        bytes_down_per_client,
        train_seconds,
        server_seconds: server.elapsed().as_secs_f64(),
    })
}

/// How a mask sits in its `rows × cols` matrix: the share of rows and of columns it touches.
pub fn coverage(mask: &[u32], rows: usize, cols: usize) -> (f64, f64) {
    let mut r = vec![false; rows];
    let mut c = vec![false; cols];
    for &i in mask {
        r[i as usize / cols] = true;
        c[i as usize % cols] = true;
    }
    let share = |v: &[bool]| v.iter().filter(|&&x| x).count() as f64 / v.len().max(1) as f64;
    (share(&r), share(&c))
}

/// Entries two ascending masks share.
pub fn overlap(a: &[u32], b: &[u32]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::{toy_data, toy_vocab, ToyLearner};

    #[test]
    fn top_k_keeps_the_largest_and_breaks_ties_by_index() {
        let p = top_k(&[0.5, 3.0, 1.0, 3.0, 0.0, 2.0], 3);
        assert_eq!(p.indices, [1, 3, 5]);
        assert_eq!(p.scores, [3.0, 3.0, 2.0]);
        assert_eq!(p.bytes(), 24);
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2).indices, [0, 1]);
        assert_eq!(top_k(&[1.0], 5).indices, [0]);
    }

    #[test]
    fn merge_has_exactly_k_entries_weighted_by_rows_and_seeded_on_ties() {
        let a = MaskProposal { indices: vec![0, 1, 2], scores: vec![3.0, 2.0, 1.0] };
        let b = MaskProposal { indices: vec![2, 3, 4], scores: vec![1.0, 1.0, 1.0] };
        // a's votes: 0.5, 0.33, 0.17 (x10 rows); b's: 0.33 each (x30 rows) -> 2: 1.67+10, 3: 10, 4: 10.
        let m = merge_proposals(&[(a.clone(), 10), (b.clone(), 30)], 3, 1);
        assert_eq!(m.len(), 3);
        assert!(m.contains(&2), "{m:?}");
        assert_eq!(m, merge_proposals(&[(a.clone(), 10), (b.clone(), 30)], 3, 1), "deterministic");
        // Scale-free: multiplying a client's scores changes nothing.
        let a10 = MaskProposal { indices: a.indices.clone(), scores: a.scores.iter().map(|s| s * 1e6).collect() };
        assert_eq!(m, merge_proposals(&[(a10, 10), (b.clone(), 30)], 3, 1));
        // Ties (one client, equal scores) go by the seed, not by index.
        let flat = MaskProposal { indices: (0..40).collect(), scores: vec![1.0; 40] };
        let picks: std::collections::BTreeSet<Vec<u32>> = (0..10).map(|s| merge_proposals(&[(flat.clone(), 1)], 5, s)).collect();
        assert!(picks.len() > 1, "seeded tie-breaking");
        assert!(picks.iter().all(|p| p.len() == 5 && p.windows(2).all(|w| w[0] < w[1])));
    }

    /// Only tokens `4l..4l+4` carry label `l`: the informative rows of the toy's weight matrix are
    /// the first `4·classes`. The federated mask should sit there, where a random one spreads evenly.
    #[test]
    fn federated_mask_finds_the_informative_features_uploads_only_top_k_and_is_deterministic() {
        let classes = 3;
        let (clients, _) = toy_data(6, classes, 40);
        let vocab = toy_vocab(classes);
        // Scoring at a zero weight gives zero saliency: start from a trained-looking random state.
        let mut learner = ToyLearner::new(vocab, classes, 0.0);
        let mut state = learner.trainable_state().unwrap();
        let w = candle_core::Tensor::ones((vocab, classes), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        state.insert("toy.weight".into(), w);
        learner.set_trainable_state(&state).unwrap();
        let k = 12; // of vocab x classes = 60 entries
        let cfg = MaskRoundConfig {
            seed: 5,
            clients_per_round: 3,
            batches: 2,
            batch_size: 16,
            targets: vec![MaskTarget { tensor: "toy.weight".into(), k }],
        };
        let out = mask_round(&mut learner, &clients, &cfg).unwrap();
        let mask = &out.masks["toy.weight"];
        assert_eq!(mask.len(), k, "exactly the configured count");
        assert_eq!(out.clients.len(), 3);
        assert!(out.largest_upload <= 8 * k as u64, "an upload is k indices + k scores at most");
        assert_eq!(out.bytes_up_per_client, 8 * k as u64);
        assert_eq!(out.bytes_down_per_client, 4 * k as u64);
        let informative = (4 * classes * classes) as u32; // flat indices of rows < 4·classes
        let inside = mask.iter().filter(|&&i| i < informative).count();
        assert!(inside >= k - 1, "federated mask concentrates on informative features: {mask:?}");
        let random = slora_model::sparse::random_mask(vocab, classes, k as f64 / 60.0, 5);
        let random_inside = random.iter().filter(|&&i| i < informative).count();
        assert!(random_inside < inside, "random {random_inside} vs federated {inside}");
        assert_ne!(mask, &random);
        let again = mask_round(&mut learner, &clients, &cfg).unwrap();
        assert_eq!(again.masks, out.masks, "deterministic for a seed");
        assert_eq!(learner.trainable_state().unwrap()["toy.weight"].to_vec2::<f32>().unwrap()[0][0], 1.0, "state untouched");
    }

    #[test]
    fn overlap_and_coverage() {
        assert_eq!(overlap(&[1, 3, 5, 7], &[3, 4, 5]), 2);
        assert_eq!(coverage(&[0, 1, 5], 2, 4), (1.0, 0.5)); // rows 0,1; cols 0,1
    }
}
