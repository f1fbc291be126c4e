//! Rényi-DP accounting for client-level DP-FedAvg (McMahan et al. 2018): each round samples each
//! client with probability `q`, clips its update to L2 norm C and adds N(0, (σC)²) to the sum. That
//! is the Poisson-subsampled Gaussian mechanism, whose RDP is computed as in Mironov, Talwar and
//! Zhang 2019 and converted to (ε, δ) as Google's dp-accounting `RdpAccountant` does, so the numbers
//! match that library's (tests/reference.rs embeds them, from scripts/dp_reference.py).
//!
//! ```
//! use slora_privacy::{epsilon, noise_for_epsilon, SampledGaussian};
//!
//! // 4 of 20 clients a round, 10 rounds, δ = 1/20.
//! let rounds = SampledGaussian { noise_multiplier: 1.0, sampling_rate: 0.2, steps: 10 };
//! let spent = epsilon(&[rounds], 0.05)?;
//! assert!((spent.epsilon - 1.8372117598950133).abs() < 1e-6);
//!
//! let sigma = noise_for_epsilon(2.0, 0.2, 10, 0.05)?;
//! assert!(sigma < 1.0);
//! # Ok::<(), slora_privacy::PrivacyError>(())
//! ```

#![deny(missing_docs)]

pub mod accountant;
pub mod error;
pub mod leakage;

pub use accountant::{
    default_orders, epsilon, epsilon_from_rdp, noise_for_epsilon, rdp, Epsilon, SampledGaussian,
};
pub use error::PrivacyError;
pub use leakage::{MethodLeakage, SetRecovery, UploadScores};
