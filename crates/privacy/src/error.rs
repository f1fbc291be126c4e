//! The accountant's one error type: a bad argument, named, or an unreachable target.

/// An argument outside its domain, or a target ε that no noise level reaches.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// `sampling_rate` is not in (0, 1].
    #[error("sampling_rate must be in (0, 1], got {got}")]
    SamplingRate {
        /// The value given.
        got: f64,
    },
    /// `noise_multiplier` is negative or not finite.
    #[error("noise_multiplier must be finite and >= 0, got {got}")]
    NoiseMultiplier {
        /// The value given.
        got: f64,
    },
    /// `delta` is not in (0, 1).
    #[error("delta must be in (0, 1), got {got}")]
    Delta {
        /// The value given.
        got: f64,
    },
    /// `target_epsilon` is not finite and > 0.
    #[error("target_epsilon must be finite and > 0, got {got}")]
    TargetEpsilon {
        /// The value given.
        got: f64,
    },
    /// A Rényi order is not > 1 (`+inf` is allowed).
    #[error("Rényi orders must be > 1, got {got}")]
    Order {
        /// The value given.
        got: f64,
    },
    /// The list of Rényi orders is empty.
    #[error("orders must not be empty")]
    NoOrders,
    /// `rdp` and `orders` differ in length.
    #[error("rdp has {rdp} values for {orders} orders")]
    RdpLength {
        /// How many orders.
        orders: usize,
        /// How many RDP values.
        rdp: usize,
    },
    /// Even the largest noise multiplier tried leaves ε above the target.
    #[error(
        "target_epsilon {target_epsilon} is unreachable: noise_multiplier {noise_multiplier} \
         still gives epsilon {epsilon}"
    )]
    Unreachable {
        /// The target asked for.
        target_epsilon: f64,
        /// The largest noise multiplier tried.
        noise_multiplier: f64,
        /// The ε it gives.
        epsilon: f64,
    },
}
