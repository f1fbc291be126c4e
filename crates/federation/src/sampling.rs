//! Seeded choices: which clients train in a round and the order of a client's rows.

use rand::seq::SliceRandom;

use crate::seeds::{self, Stream};

/// The clients (shard indices, ascending) that train in global round `round`: `per_round` of
/// `num_clients`, drawn without replacement from a generator seeded by (seed, round).
pub fn sample_clients(num_clients: usize, per_round: usize, seed: u64, round: u32) -> Vec<usize> {
    assert!(per_round <= num_clients, "clients_per_round {per_round} > clients {num_clients}");
    let mut rng = seeds::rng(seed, Stream::ClientSampling, &[round as u64]);
    let mut chosen = rand::seq::index::sample(&mut rng, num_clients, per_round).into_vec();
    chosen.sort_unstable();
    chosen
}

/// The order in which `client` visits its `rows` rows in local epoch `epoch` of global round `round`.
pub fn epoch_order(rows: usize, seed: u64, round: u32, client: usize, epoch: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = seeds::rng(seed, Stream::Shuffle, &[round as u64, client as u64, epoch as u64]);
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_sampling_is_deterministic_without_replacement() {
        for round in 0..50 {
            let a = sample_clients(20, 4, 42, round);
            assert_eq!(a, sample_clients(20, 4, 42, round));
            assert_eq!(a.len(), 4);
            assert!(a.windows(2).all(|w| w[0] < w[1]), "distinct and sorted: {a:?}");
            assert!(a.iter().all(|&c| c < 20));
        }
        // Different rounds and seeds give different draws (not all equal over 50 rounds).
        let rounds: std::collections::BTreeSet<Vec<usize>> =
            (0..50).map(|r| sample_clients(20, 4, 42, r)).collect();
        assert!(rounds.len() > 40, "only {} distinct draws in 50 rounds", rounds.len());
        assert_ne!(
            (0..10).map(|r| sample_clients(20, 4, 42, r)).collect::<Vec<_>>(),
            (0..10).map(|r| sample_clients(20, 4, 7, r)).collect::<Vec<_>>()
        );
        assert_eq!(sample_clients(5, 5, 1, 3), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_client_gets_sampled_about_equally() {
        let mut counts = [0usize; 10];
        for r in 0..2000 {
            for c in sample_clients(10, 3, 9, r) {
                counts[c] += 1;
            }
        }
        // Expected 600 each; binomial sd ~ 20.
        assert!(counts.iter().all(|&n| (500..700).contains(&n)), "{counts:?}");
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 42, 1, 3, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 42, 1, 3, 0));
        assert_ne!(a, epoch_order(100, 42, 1, 3, 1));
        assert_ne!(a, epoch_order(100, 42, 1, 4, 0));
        assert_ne!(a, epoch_order(100, 42, 2, 3, 0));
    }
}
