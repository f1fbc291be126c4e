//! The RDP accountant: RDP of the Poisson-subsampled Gaussian mechanism at each Rényi order,
//! summed over a composition, and converted to (ε, δ).
//!
//! A port of dp-accounting 0.6.0's `rdp/rdp_privacy_accountant.py` (`_compute_log_a_int`,
//! `_compute_log_a_frac`, `_compute_rdp_poisson_subsampled_gaussian`, `compute_epsilon`), kept
//! term for term so that the numbers, the optimal order and the orders it gives up on are the same.

use crate::PrivacyError;

/// One Poisson-subsampled Gaussian mechanism applied `steps` times: each round samples each client
/// with probability `sampling_rate` and adds N(0, (noise_multiplier·C)²) to the sum of updates
/// clipped to L2 norm C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledGaussian {
    /// σ: the noise's standard deviation over the clipping norm C.
    pub noise_multiplier: f64,
    /// q: the probability that a client takes part in a round.
    pub sampling_rate: f64,
    /// How many rounds.
    pub steps: u32,
}

/// The accountant's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Epsilon {
    /// ε; `f64::INFINITY` when some mechanism adds no noise.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The Rényi order that gave the bound (the first default order when ε is infinite).
    pub order: f64,
}

/// dp-accounting gives up on a fractional order after this many series terms (`_MAX_STEPS_LOG_A_FRAC`).
const MAX_TERMS_LOG_A_FRAC: usize = 1000;

/// `noise_for_epsilon` doubles its upper bracket at most this many times (from 1 to 2⁴⁰ ≈ 1.1e12).
const MAX_NOISE_DOUBLINGS: u32 = 40;

/// The relative width at which `noise_for_epsilon` stops bisecting.
const NOISE_RELATIVE_TOLERANCE: f64 = 1e-6;

/// The default Rényi orders: exactly dp-accounting's `RdpAccountant` default orders
/// (`DEFAULT_RDP_ORDERS`): 1.1, 1.2, …, 10.9, then 11, …, 63, then 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    // `1.0 + x / 10.0`, as Python computes `1 + x / 10.0`, so 1.3 and friends are the same floats.
    let tenths = (1..100).map(|x| 1.0 + f64::from(x) / 10.0);
    let integers = (11..64).map(f64::from);
    let large = [128.0, 256.0, 512.0, 1024.0];
    tenths.chain(integers).chain(large).collect()
}

/// RDP of the composition at each order: the per-step RDP of each mechanism times its steps,
/// summed. An order is `+inf` where a mechanism adds no noise, and also where dp-accounting's
/// series for a fractional order does not converge (it excludes those orders, and so do we).
pub fn rdp(mechanisms: &[SampledGaussian], orders: &[f64]) -> Result<Vec<f64>, PrivacyError> {
    validate_orders(orders)?;
    for mechanism in mechanisms {
        mechanism.validate()?;
    }
    let mut total = vec![0.0; orders.len()];
    // A mechanism run 0 times is skipped rather than multiplied in: 0·∞ would be NaN.
    for mechanism in mechanisms.iter().filter(|m| m.steps > 0) {
        for (sum, &order) in total.iter_mut().zip(orders) {
            *sum += f64::from(mechanism.steps) * mechanism.rdp_one_step(order);
        }
    }
    Ok(total)
}

/// (ε, δ) of the composition over the default orders, by dp-accounting's RDP→(ε, δ) conversion:
/// the improved bound of Canonne–Kamath–Steinke 2020 (Prop. 12) / Asoodeh et al. 2020 (Eq. 20),
/// with the KL bound δ ≤ √(1 − e^−RDP) giving ε = 0 where it applies.
pub fn epsilon(mechanisms: &[SampledGaussian], delta: f64) -> Result<Epsilon, PrivacyError> {
    let orders = default_orders();
    let rdp = rdp(mechanisms, &orders)?;
    epsilon_from_rdp(&orders, &rdp, delta)
}

/// (ε, δ) from RDP values at the given orders (from [`rdp`] at orders of your own), by the same
/// conversion as [`epsilon`]. An order whose RDP is infinite gives ε = ∞ there.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<Epsilon, PrivacyError> {
    validate_delta(delta)?;
    validate_orders(orders)?;
    if rdp.len() != orders.len() {
        return Err(PrivacyError::RdpLength {
            orders: orders.len(),
            rdp: rdp.len(),
        });
    }
    Ok(convert(orders, rdp, delta))
}

/// The smallest noise multiplier (to a relative tolerance of 1e-6, by bisection) whose `steps`
/// rounds at `sampling_rate` give ε ≤ target at `delta`. The answer is the bracket's upper end, so
/// it always meets the target. Zero steps need no noise (0).
///
/// A caveat inherited from dp-accounting's conversion: at a δ so small that the default orders put
/// a floor under ε (≈ ln(1/(1024δ))/1023 at order 1024, e.g. 0.67 for δ = 1e-300; it matters only
/// for δ below about 1e-8), a target under that floor is "met" at σ ~ 1e7, where rounding leaves
/// some RDP a hair below 0 and the conversion reads that as ε = 0.
pub fn noise_for_epsilon(
    target_epsilon: f64,
    sampling_rate: f64,
    steps: u32,
    delta: f64,
) -> Result<f64, PrivacyError> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(PrivacyError::TargetEpsilon {
            got: target_epsilon,
        });
    }
    validate_sampling_rate(sampling_rate)?;
    validate_delta(delta)?;
    if steps == 0 {
        return Ok(0.0);
    }
    let epsilon_at = |noise_multiplier: f64| {
        let rounds = SampledGaussian {
            noise_multiplier,
            sampling_rate,
            steps,
        };
        epsilon(&[rounds], delta).map(|spent| spent.epsilon)
    };

    // σ = 0 gives ε = ∞, so 0 is a valid lower end; double the upper end until it meets the target.
    let (mut low, mut high) = (0.0, 1.0);
    let mut doublings = 0;
    loop {
        let spent = epsilon_at(high)?;
        if spent <= target_epsilon {
            break;
        }
        if doublings == MAX_NOISE_DOUBLINGS {
            return Err(PrivacyError::Unreachable {
                target_epsilon,
                noise_multiplier: high,
                epsilon: spent,
            });
        }
        (low, high) = (high, 2.0 * high);
        doublings += 1;
    }
    while high - low > NOISE_RELATIVE_TOLERANCE * high {
        let middle = 0.5 * (low + high);
        if epsilon_at(middle)? <= target_epsilon {
            high = middle;
        } else {
            low = middle;
        }
    }
    Ok(high)
}

impl SampledGaussian {
    fn validate(&self) -> Result<(), PrivacyError> {
        validate_sampling_rate(self.sampling_rate)?;
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(PrivacyError::NoiseMultiplier {
                got: self.noise_multiplier,
            });
        }
        Ok(())
    }

    /// RDP of one step at `order` (`_compute_rdp_poisson_subsampled_gaussian`'s `compute_one_order`).
    fn rdp_one_step(&self, order: f64) -> f64 {
        let (q, sigma) = (self.sampling_rate, self.noise_multiplier);
        if order.is_infinite() || sigma == 0.0 {
            return f64::INFINITY;
        }
        if q == 1.0 {
            return order / (2.0 * sigma * sigma);
        }
        let log_a = if order.fract() == 0.0 {
            // The exact binomial sum, α + 1 terms: its cost grows with the order.
            log_a_integer(q, sigma, order as u64)
        } else {
            log_a_fractional(q, sigma, order)
        };
        log_a / (order - 1.0)
    }
}

fn validate_sampling_rate(sampling_rate: f64) -> Result<(), PrivacyError> {
    if sampling_rate > 0.0 && sampling_rate <= 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::SamplingRate { got: sampling_rate })
    }
}

fn validate_delta(delta: f64) -> Result<(), PrivacyError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::Delta { got: delta })
    }
}

fn validate_orders(orders: &[f64]) -> Result<(), PrivacyError> {
    if orders.is_empty() {
        return Err(PrivacyError::NoOrders);
    }
    // Order 1 (KL) would divide 0 by 0 in A_α / (α − 1); dp-accounting fails there too.
    match orders.iter().find(|&&order| order.is_nan() || order <= 1.0) {
        Some(&got) => Err(PrivacyError::Order { got }),
        None => Ok(()),
    }
}

/// log(A_α) for an integer α and 0 < q < 1 (`_compute_log_a_int`): the binomial expansion
/// A_α = Σᵢ C(α, i) qⁱ (1 − q)^(α−i) e^((i² − i)/(2σ²)), summed in log space.
fn log_a_integer(q: f64, sigma: f64, order: u64) -> f64 {
    let alpha = order as f64;
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_sigma_sq = 2.0 * sigma * sigma;
    (0..=order).fold(f64::NEG_INFINITY, |log_a, i| {
        let i = i as f64;
        let log_coef = log_binomial(alpha, i) + i * log_q + (alpha - i) * log_1mq;
        log_add(log_a, log_coef + (i * i - i) / two_sigma_sq)
    })
}

/// log(A_α) for a fractional α and 0 < q < 1 (`_compute_log_a_frac`; Mironov, Talwar, Zhang 2019,
/// Sec. 3.3): the integral split at z₀ into two series, summed until both terms fall and are
/// e⁻³⁰ below the total. Gives `+inf` (order excluded) after `MAX_TERMS_LOG_A_FRAC` terms without
/// convergence, as dp-accounting does; small orders at large q·σ hit this.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_sigma_sq = 2.0 * sigma * sigma;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);

    for i in 0..MAX_TERMS_LOG_A_FRAC {
        let i = i as f64;
        let log_coef = log_binomial(alpha, i);
        let j = alpha - i;

        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;

        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);

        let log_s0 = log_t0 + (i * i - i) / two_sigma_sq + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_sigma_sq + log_e1;

        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);

        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// The RDP→(ε, δ) conversion of dp-accounting's `compute_epsilon` (δ > 0): per order the improved
/// bound ε = RDP + log(1 − 1/α) − log(δα)/(α − 1) (only for α > 1.01, where it is stable), or 0
/// where the KL bound already gives δ² > 1 − e^−RDP; then the first order with the least ε.
/// The arguments are valid and of one length, and `orders` is not empty.
fn convert(orders: &[f64], rdp: &[f64], delta: f64) -> Epsilon {
    let epsilon_at = |alpha: f64, r: f64| {
        if r < 0.0 {
            // Rounding at huge σ can make log(A_α) a hair negative: dp-accounting calls it 0.
            0.0
        } else if delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if r.is_infinite() || alpha.is_infinite() {
            // dp-accounting would compute ∞/∞ = NaN at α = ∞; the bound there is ∞.
            f64::INFINITY
        } else if alpha > 1.01 {
            r + (-1.0 / alpha).ln_1p() - (delta * alpha).ln() / (alpha - 1.0)
        } else {
            f64::INFINITY
        }
    };
    // `np.argmin`: the first index of the minimum.
    let (mut best_epsilon, mut best_order) = (epsilon_at(orders[0], rdp[0]), orders[0]);
    for (&alpha, &r) in orders.iter().zip(rdp).skip(1) {
        let candidate = epsilon_at(alpha, r);
        if candidate < best_epsilon {
            (best_epsilon, best_order) = (candidate, alpha);
        }
    }
    Epsilon {
        epsilon: best_epsilon.max(0.0),
        delta,
        order: best_order,
    }
}

/// log(eˣ + eʸ) (`_log_add`).
fn log_add(log_x: f64, log_y: f64) -> f64 {
    let (a, b) = (log_x.min(log_y), log_x.max(log_y));
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// log |C(n, k)| through log |Γ| (`_log_comb`); for fractional n, n − k + 1 goes negative.
fn log_binomial(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// Past this, erfc(x) (≈ e^−x²/(x√π)) nears the subnormal range and loses precision.
const LOG_ERFC_ASYMPTOTIC_FROM: f64 = 26.0;

/// log(erfc(x)), accurate for large x (`_log_erfc`, which scipy computes through the scaled erfcx).
/// libm has erfc but no erfcx, so past x = 26 this sums erfc's asymptotic series
/// erfc(x) = e^−x²/(x√π) · Σₙ (−1)ⁿ (2n − 1)!!/(2x²)ⁿ, whose terms fall below 1e-17 within 7.
fn log_erfc(x: f64) -> f64 {
    if x < LOG_ERFC_ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    let inv_two_x_sq = 1.0 / (2.0 * x * x);
    let (mut series, mut term) = (1.0, 1.0);
    for n in 1..=8 {
        term *= -f64::from(2 * n - 1) * inv_two_x_sq;
        series += term;
    }
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + f64::ln(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_relative(got: f64, expected: f64, tolerance: f64) {
        let error = ((got - expected) / expected).abs();
        assert!(
            error <= tolerance,
            "got {got}, expected {expected} (relative error {error:e})"
        );
    }

    #[test]
    fn default_orders_are_dp_accountings() {
        let orders = default_orders();
        assert_eq!(orders.len(), 99 + 53 + 4);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[2], 1.0 + 3.0 / 10.0);
        assert_eq!(orders[9], 2.0);
        assert_eq!(orders[98], 10.9);
        assert_eq!(orders[99], 11.0);
        assert_eq!(orders[151], 63.0);
        assert_eq!(&orders[152..], &[128.0, 256.0, 512.0, 1024.0]);
    }

    #[test]
    fn conversion_gives_zero_where_the_kl_bound_applies() {
        // δ² + e^−RDP − 1 > 0: the KL bound already gives δ.
        let spent = convert(&[2.0, 3.0], &[1e-12, 2e-12], 1e-5);
        assert_eq!((spent.epsilon, spent.order), (0.0, 2.0));
    }

    #[test]
    fn log_erfc_is_continuous_where_the_asymptotic_series_takes_over() {
        // Expected values from mpmath at 30 digits: `mpmath.log(mpmath.erfc(x))`.
        let at_26 = -679.831_199_763_194_2;
        assert_relative(libm::erfc(26.0).ln(), at_26, 1e-15);
        assert_relative(log_erfc(26.0), at_26, 1e-15);
        assert_relative(log_erfc(30.0), -903.974_117_110_643_9, 1e-15);
        assert_relative(log_erfc(1000.0), -1_000_007.480_120_721_9, 1e-15);
    }

    #[test]
    fn log_binomial_handles_fractional_orders_past_their_value() {
        // |C(1.5, 3)| = |1.5 · 0.5 · (−0.5)| / 3! = 0.0625.
        assert_relative(log_binomial(1.5, 3.0), 0.0625f64.ln(), 1e-14);
        assert_relative(log_binomial(10.0, 3.0), 120f64.ln(), 1e-14);
    }

    #[test]
    fn full_sampling_is_the_plain_gaussian() {
        let gaussian = SampledGaussian {
            noise_multiplier: 2.0,
            sampling_rate: 1.0,
            steps: 3,
        };
        let rdp = rdp(&[gaussian], &[1.5, 7.0]).unwrap();
        assert_eq!(rdp, vec![3.0 * 1.5 / 8.0, 3.0 * 7.0 / 8.0]);
    }

    #[test]
    fn no_noise_gives_infinite_epsilon() {
        let open = SampledGaussian {
            noise_multiplier: 0.0,
            sampling_rate: 0.2,
            steps: 1,
        };
        let spent = epsilon(&[open], 0.05).unwrap();
        assert_eq!(spent.epsilon, f64::INFINITY);
        assert_eq!(spent.order, 1.1);
    }

    #[test]
    fn zero_steps_cost_nothing() {
        let idle = SampledGaussian {
            noise_multiplier: 0.0,
            sampling_rate: 0.2,
            steps: 0,
        };
        assert_eq!(epsilon(&[idle], 0.05).unwrap().epsilon, 0.0);
        assert_eq!(noise_for_epsilon(1.0, 0.2, 0, 0.05), Ok(0.0));
    }

    #[test]
    fn bad_arguments_are_named() {
        let good = SampledGaussian {
            noise_multiplier: 1.0,
            sampling_rate: 0.2,
            steps: 10,
        };
        let message = |result: Result<Epsilon, PrivacyError>| result.unwrap_err().to_string();
        for q in [0.0, -0.1, 1.5, f64::NAN] {
            let bad = SampledGaussian {
                sampling_rate: q,
                ..good
            };
            assert!(message(epsilon(&[bad], 0.05)).starts_with("sampling_rate"));
        }
        for sigma in [-1.0, f64::INFINITY, f64::NAN] {
            let bad = SampledGaussian {
                noise_multiplier: sigma,
                ..good
            };
            assert!(message(epsilon(&[bad], 0.05)).starts_with("noise_multiplier"));
        }
        for delta in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(message(epsilon(&[good], delta)).starts_with("delta"));
        }
        for target in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let error = noise_for_epsilon(target, 0.2, 10, 0.05).unwrap_err();
            assert!(error.to_string().starts_with("target_epsilon"), "{error}");
        }
        assert_eq!(rdp(&[good], &[1.0]), Err(PrivacyError::Order { got: 1.0 }));
        assert_eq!(rdp(&[good], &[]), Err(PrivacyError::NoOrders));
        let length = epsilon_from_rdp(&[2.0, 3.0], &[0.1], 0.05);
        assert_eq!(length, Err(PrivacyError::RdpLength { orders: 2, rdp: 1 }));
    }
}
