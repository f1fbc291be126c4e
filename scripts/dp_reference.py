#!/usr/bin/env python3
"""Reference values for crates/privacy (slora-privacy), from Google's dp-accounting.

Run (dp-accounting 0.6.0, scipy 1.17.1, numpy 2.4.6, Python 3.11), with the venv outside the repo:

    python3.11 -m venv /work/cache/dp-venv && /work/cache/dp-venv/bin/pip install dp-accounting==0.6.0
    /work/cache/dp-venv/bin/python scripts/dp_reference.py 2>/dev/null

It prints, in full precision (repr), what crates/privacy/tests/reference.rs embeds:
  1. epsilon and the optimal order from `dp_accounting.rdp.RdpAccountant()` (default orders) for
     Poisson-subsampled Gaussian settings, one of them a composition of two mechanisms;
  2. the per-step RDP at a few default orders, integer and fractional, for our federated setting;
  3. the noise multiplier for a target epsilon, found by the same bisection as
     `slora_privacy::noise_for_epsilon` (doubling from 1, then halving until the bracket is within a
     relative 1e-6), with dp-accounting's epsilon inside.

Orders whose fractional series does not converge in 1000 terms are excluded by dp-accounting (it
logs a warning and sets that order's RDP to inf); stderr carries those warnings, hence `2>/dev/null`.
"""

import importlib.metadata

import dp_accounting
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp import rdp_privacy_accountant

# (label, [(noise_multiplier, sampling_rate, steps), ...], delta)
SETTINGS = [
    # Abadi et al. 2016's DP-SGD regime: sigma 1.1, lot 600 of 60,000 (q = 0.01), 10,000 steps.
    ("abadi_sigma1.1_q0.01_T10000", [(1.1, 0.01, 10000)], 1e-5),
    # tensorflow_privacy's MNIST tutorial: batch 256 of 60,000, 60 epochs.
    ("mnist_tutorial_sigma1.1_q256/60000_T14062", [(1.1, 256 / 60000, 14062)], 1e-5),
    # Our default federated setting: 4 of 20 clients a round, 10 rounds, delta = 1/20.
    ("federated_sigma1.0_q0.2_T10", [(1.0, 0.2, 10)], 0.05),
    ("federated_sigma0.7_q0.2_T10", [(0.7, 0.2, 10)], 0.05),
    # sampling_rate = 1: the plain Gaussian mechanism, RDP alpha / (2 sigma^2).
    ("gaussian_sigma2.0_q1_T5", [(2.0, 1.0, 5)], 1e-5),
    # Large noise: the optimum sits at a large integer order.
    ("large_noise_sigma5_q0.05_T100", [(5.0, 0.05, 100)], 1e-5),
    # Two mechanisms composed (e.g. a warm-up phase and a main phase).
    ("composed_two_phases", [(1.0, 0.01, 1000), (2.0, 0.05, 500)], 1e-5),
]

RDP_SETTING = (0.7, 0.2)  # one round of our default federated setting
RDP_ORDERS = [1.5, 2.0, 2.5, 3.3, 10.9, 11, 32, 63, 1024]

NOISE_TARGETS = [8.0, 2.0]  # at q = 0.2, 10 steps, delta = 0.05
NOISE_SETTING = (0.2, 10, 0.05)


def event_for(mechanisms):
  return dp_accounting.ComposedDpEvent([
      dp_accounting.SelfComposedDpEvent(
          dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
      )
      for sigma, q, steps in mechanisms
  ])


def epsilon_and_order(mechanisms, delta):
  accountant = RdpAccountant()
  accountant.compose(event_for(mechanisms))
  eps, order = accountant.get_epsilon_and_optimal_order(delta)
  return float(eps), float(order)


def noise_for_epsilon(target, q, steps, delta):
  """Mirrors slora_privacy::noise_for_epsilon: the bracket's upper end meets the target."""
  eps = lambda sigma: epsilon_and_order([(sigma, q, steps)], delta)[0]
  lo, hi = 0.0, 1.0
  while eps(hi) > target:
    lo, hi = hi, 2.0 * hi
  while hi - lo > 1e-6 * hi:
    mid = 0.5 * (lo + hi)
    if eps(mid) <= target:
      hi = mid
    else:
      lo = mid
  return hi


def main():
  print(f"dp-accounting {importlib.metadata.version('dp-accounting')}")
  print("# epsilon: label, mechanisms (sigma, q, steps), delta -> epsilon, optimal order")
  for label, mechanisms, delta in SETTINGS:
    eps, order = epsilon_and_order(mechanisms, delta)
    print(f"{label}: {mechanisms} delta={delta!r} -> epsilon={eps!r} order={order!r}")

  sigma, q = RDP_SETTING
  rdp = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, sigma, RDP_ORDERS)
  print(f"# one-step RDP, sigma={sigma!r} q={q!r}")
  for order, value in zip(RDP_ORDERS, rdp):
    print(f"order {order!r}: {float(value)!r}")

  q, steps, delta = NOISE_SETTING
  print(f"# noise multiplier for target epsilon, q={q!r} steps={steps} delta={delta!r}")
  for target in NOISE_TARGETS:
    sigma = noise_for_epsilon(target, q, steps, delta)
    eps, order = epsilon_and_order([(sigma, q, steps)], delta)
    print(f"target {target!r}: sigma={sigma!r} (epsilon={eps!r} order={order!r})")


if __name__ == "__main__":
  main()
