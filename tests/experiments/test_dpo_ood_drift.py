"""Xu et al. 2024, Sec. 4: DPO moves mass onto uncovered responses, PPO does not."""

import dataclasses

import numpy as np

from experiments import dpo_ood_drift as experiment


def test_cyclic_pairs_cover_the_diagonal_and_k_neighbours():
  prompts, chosen, rejected, covered = experiment.cyclic_pairs(8, 2)
  np.testing.assert_array_equal(chosen, prompts)
  assert covered.sum() == 8 * 3 and covered[7, 0] and covered[7, 1] and not covered[7, 2]
  # every response is rejected exactly k times: no response is better "on average"
  np.testing.assert_array_equal(np.bincount(rejected, minlength=8), np.full(8, 2))


def test_reduced_run(tmp_path):
  numbers = experiment.run(dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path)))
  entry = numbers["grid"]["beta=0.1,k=2"]
  uncovered = {name: entry[name]["uncovered_mass"]["mean"]
               for name in ("reference", "dpo", "ppo_rm300")}
  assert uncovered["dpo"] > 2 * uncovered["reference"], uncovered
  assert uncovered["ppo_rm300"] <= uncovered["reference"], uncovered
  assert uncovered["dpo"] > uncovered["ppo_rm300"] + 0.05, uncovered
  assert entry["seeds_dpo_uncovered_above_ppo_rm300"] == numbers["config"]["num_seeds"]
  # both learn the preferred (diagonal) response
  for name in ("dpo", "ppo_rm300"):
    assert entry[name]["gold_reward"]["mean"] > entry["reference"]["gold_reward"]["mean"] + 0.3
