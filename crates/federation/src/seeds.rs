//! Seed derivation: every random choice of a run is a pure function of (run seed, purpose, indices).
//!
//! Nothing random is carried from one round to the next, so a run resumed from a round checkpoint draws
//! exactly what the uninterrupted run would have drawn. The derivation is
//! `h = mix(seed ^ mix(stream)); for p in parts { h = mix(h ^ mix(p + GOLDEN)) }` with SplitMix64's
//! finaliser as `mix`; the result seeds a `ChaCha8Rng` (or is handed to the model as a dropout seed).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a derived seed is used for (each purpose is an independent stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Which clients take part in a round: parts = [round].
    ClientSampling = 1,
    /// Order of a client's rows in one local epoch: parts = [round, client, epoch].
    Shuffle = 2,
    /// Dropout masks of one local step: parts = [round, client, step].
    Dropout = 3,
    /// Stratified subsample of the test shard: parts = [].
    EvalSubsample = 4,
    /// The federated Stage-1 mask: client sampling (parts = []), a client's row order ([client]),
    /// tie-breaking per matrix ([matrix, 1]).
    MaskRound = 5,
    /// DP-FedAvg's Gaussian noise ([`crate::privacy`]): parts = [round, client + 1] for a client's
    /// upload (local DP), [round, 0] for the round's sum (central DP).
    PrivacyNoise = 6,
    /// Which rounds record their uploads for the privacy audit: parts = [round_offset].
    UploadRecord = 7,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

use slora_model::seed::splitmix64 as mix;

/// Derives the seed for `stream` at the given indices (round, client, …) from the run seed.
pub fn derive(seed: u64, stream: Stream, parts: &[u64]) -> u64 {
    let mut h = mix(seed ^ mix(stream as u64));
    for &p in parts {
        h = mix(h ^ mix(p.wrapping_add(GOLDEN)));
    }
    h
}

/// A ChaCha8 generator seeded with [`derive`].
pub fn rng(seed: u64, stream: Stream, parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, stream, parts))
}

/// A one-line description of the derivation, stored in every checkpoint.
pub const DERIVATION: &str = "splitmix64(seed, stream, parts) -> ChaCha8Rng; streams: \
    1 client sampling [round], 2 shuffle [round, client, epoch], 3 dropout [round, client, step], \
    4 eval subsample []; rounds are global (round_offset + local round)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_parts_are_independent() {
        let a = derive(42, Stream::Shuffle, &[1, 2, 0]);
        assert_eq!(a, derive(42, Stream::Shuffle, &[1, 2, 0]));
        assert_ne!(a, derive(42, Stream::Dropout, &[1, 2, 0]));
        assert_ne!(a, derive(42, Stream::Shuffle, &[2, 1, 0]));
        assert_ne!(a, derive(43, Stream::Shuffle, &[1, 2, 0]));
        assert_ne!(derive(42, Stream::Shuffle, &[]), derive(42, Stream::Shuffle, &[0]));
    }
}
