"""Azar et al. 2023, Sec. 5.4: DPO goes deterministic, IPO stops at its closed form."""

import dataclasses
import os

import numpy as np
import pytest

from experiments import ipo_vs_dpo_bandit as experiment


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_closed_forms(tau):
  # D1: h_ab = h_bc = 1 / (3 tau), so pi ∝ (e^{1/(3 tau)}, 1, e^{-1/(3 tau)})
  weights = np.exp([1 / (3 * tau), 0.0, -1 / (3 * tau)])
  np.testing.assert_allclose(experiment.ipo_fixed_point(experiment.D1, tau, 3),
                             weights / weights.sum(), rtol=1e-10)
  two = experiment.ipo_fixed_point(experiment.TWO_ACTIONS, tau, 2)
  np.testing.assert_allclose(two[0], 1 / (1 + np.exp(-1 / (2 * tau))), rtol=1e-10)
  # tau = 0.1 by hand: pi(a) = e^{10/3} / (e^{10/3} + 1 + e^{-10/3}) = 0.96437
  if tau == 0.1:
    np.testing.assert_allclose(weights[0] / weights.sum(), 0.96437, atol=1e-5)


def test_reduced_run(tmp_path):
  config = dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path))
  numbers = experiment.run(config)
  for tau, entry in numbers["d1"].items():
    assert entry["dpo"]["mean"][0] > 0.99, tau  # DPO: deterministic on a
    np.testing.assert_allclose(entry["ipo"]["mean"], entry["ipo_closed_form"], atol=0.02)
  for entry in numbers["two_actions"].values():
    assert entry["dpo"]["mean"][0] > 0.99
    np.testing.assert_allclose(entry["ipo"]["mean"][0], entry["ipo_closed_form"][0], atol=0.01)
  assert {"figure.png", "numbers.json"} <= set(os.listdir(tmp_path))
