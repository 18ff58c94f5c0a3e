"""Xu et al. 2024, Tables 3 and 4, on the synthetic task: PPO's key factors (advantage
whitening, large batch, EMA reference), then DPO vs DPO-Iter vs PPO.

Fast tests pin the pure helpers (the EMA rate conversion, the variants' budgets, the configs
each variant trains with, the matched-KL reading) against hand computations. The slow test
runs the reduced setting and asserts what the full run measured (docs/_drafts/
ppo_key_factors.md), not the paper's ordering: every PPO of the chain, DPO and DPO-Iter
improve on the SFT model; advantage whitening and the EMA reference at ReaLHF's rate change
little; the large batch's samples in a quarter of the steps fall short; DPO-Iter has the
highest gold reward as trained, at several times PPO's KL, and its frontier stays above DPO
at matched KL.
"""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ppo_key_factors as experiment
from jaxalign.training.ppo import ema_update


def test_ema_rate_per_iteration_by_hand():
  # 1 - 0.999^4 = 1 - 0.996005996001
  assert experiment.ema_rate_per_iteration(0.001, 4) == pytest.approx(0.003994003999, abs=1e-12)
  assert experiment.ema_rate_per_iteration(0.001, 1) == pytest.approx(0.001)
  assert experiment.ema_rate_per_iteration(0.5, 2) == pytest.approx(0.75)
  assert experiment.ema_rate_per_iteration(0.0, 8) == 0.0


def test_one_converted_update_equals_per_step_updates_towards_a_fixed_policy():
  reference = {"w": jnp.array([0.0, 1.0, -2.0])}
  policy = {"w": jnp.array([1.0, 3.0, 2.0])}
  per_step = reference
  for _ in range(4):
    per_step = ema_update(per_step, policy, 0.001)
  once = ema_update(reference, policy, experiment.ema_rate_per_iteration(0.001, 4))
  np.testing.assert_allclose(once["w"], per_step["w"], rtol=1e-6, atol=1e-7)


def test_variant_budgets_by_hand():
  config = experiment.Config()  # 40 iterations, 2 epochs x 2 minibatches, 32 prompts, x4
  work = experiment.compute(config)
  assert experiment.steps_per_iteration(config) == 4
  expected = {"PPO (baseline)": (160, 1280), "+ advantage whitening": (160, 1280),
              "+ large batch": (160, 5120), "+ EMA reference (paper rate)": (160, 5120),
              "large batch, samples fixed": (40, 1280)}
  for name, (steps, samples) in expected.items():
    assert (work[name]["policy_steps"], work[name]["samples_drawn"]) == (steps, samples), name
  # DPO-Iter draws the chain's last PPO's samples: 4 refreshes x 320 prompts x 4 samples
  assert experiment.dpo_iter_prompts(config) == 320
  assert work[experiment.DPO_ITER] == {"policy_steps": 200, "samples_drawn": 5120}
  assert work[experiment.DPO]["samples_drawn"] == 0


def test_variants_are_cumulative_one_knob_at_a_time():
  config = experiment.Config()
  chain = experiment.ppo_variants(config)[:4]
  knobs = lambda v: (v.whiten_advantages, v.rollout_batch_size, v.iterations, v.ref_ema)
  changed = [sum(a != b for a, b in zip(knobs(x), knobs(y))) for x, y in zip(chain, chain[1:])]
  assert changed == [1, 1, 1]
  assert knobs(chain[0]) == (False, 32, 40, 0.0)
  assert knobs(chain[3]) == (True, 128, 40, pytest.approx(0.003994003999))


def test_ppo_config_carries_each_variant():
  config = experiment.QUICK
  for variant in experiment.ppo_variants(config):
    run = experiment.ppo_config(config, 3, variant, "sft", "rm")
    assert (run.seed, run.data.task_seed, run.task) == (3, 3, "ppo")
    assert run.ppo.whiten_advantages == variant.whiten_advantages
    assert run.ppo.rollout_batch_size == variant.rollout_batch_size
    assert run.ppo.ref_ema == variant.ref_ema
    assert run.loop.steps == variant.iterations
    assert (run.ppo.epochs, run.ppo.num_minibatches) == (2, 2)
    assert not run.ppo.adaptive_kl and run.ppo.kl_coef == config.kl_coef


def test_matched_kl_by_hand():
  config = experiment.QUICK
  names = experiment.ppo_names(config)
  score = lambda kl, gold: {"kl": kl, "gold_reward": gold}
  entry = {experiment.REFERENCE: score(0.0, -1.0), experiment.DPO: score(1.0, 0.5),
           experiment.DPO_ITER: score(8.0, 3.0), experiment.dpo_iter_names(config)[1]: score(
               2.0, 0.5), experiment.dpo_iter_names(config)[2]: score(9.0, 2.0)}
  for index, name in enumerate(names):
    entry[name] = score(4.0 + index, 1.0 + index)
  entry[names[5]] = score(0.5, 0.0)  # the samples-fixed control does not set the KL
  matched = experiment.matched_seed(config, entry)
  assert matched["kl"] == 4.0
  assert matched[names[0]] == pytest.approx(1.0)  # exact at its own KL
  assert matched[names[1]] == pytest.approx(-1.0 + 3.0 * 4.0 / 5.0)  # its chord
  assert matched[experiment.DPO_ITER] == pytest.approx(-1.0 + 4.0 * 4.0 / 8.0)
  assert matched[experiment.DPO] == 0.5  # below the matched KL: where it is
  assert matched[names[5]] == 0.0
  # the hull of (0, -1), (2, 0.5), (8, 3), (9, 2): (2, 0.5) lies above the chord, so at 4
  # the edge (2, 0.5)-(8, 3)
  assert matched[experiment.DPO_ITER_FRONTIER] == pytest.approx(0.5 + 2.5 * 2.0 / 6.0)


@pytest.mark.slow  # 170-340 s on the shared 2-core machine under load
def test_reduced_run(tmp_path):
  config = dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path))
  experiment.run(config)
  assert os.path.getsize(tmp_path / "figure.png") > 0
  with open(tmp_path / "numbers.json") as f:
    check_reduced_run(json.load(f), config)


def check_reduced_run(numbers: dict, config: experiment.Config):
  summary, entry = numbers["summary"], numbers["per_seed"]["0"]
  names = experiment.ppo_names(config)
  assert list(summary["policies"]) == experiment.policy_names(config)
  for name in experiment.policy_names(config):
    assert {"gold_reward", "kl", "rm_score", "length"} <= set(entry[name]), name
    assert all(np.isfinite(entry[name][m]) for m in ("gold_reward", "kl", "rm_score")), name
  assert entry[experiment.REFERENCE]["kl"] == pytest.approx(0.0, abs=1e-4)
  assert summary["compute"]["+ large batch"]["samples_drawn"] == 2 * 16 * 32
  gold = {n: entry[n]["gold_reward"] for n in experiment.policy_names(config)}
  kl = {n: entry[n]["kl"] for n in experiment.policy_names(config)}
  sft = gold[experiment.REFERENCE]
  # what the full run measured (docs/_drafts/ppo_key_factors.md), on its seed 0:
  # every PPO of the chain, DPO and DPO-Iter improve on the SFT model
  for name in [*names[:5], experiment.DPO, experiment.DPO_ITER]:
    assert gold[name] > sft + 0.3, (name, gold)
  # advantage whitening changes little either way (full run: -0.33, 0.00, -0.01)
  assert abs(gold[names[1]] - gold[names[0]]) < 0.5, gold
  # the EMA reference at ReaLHF's rate hardly moves the reference (15% over the run): it
  # stays next to the large-batch run (full run: +0.14, 0.00, +0.02 gold)
  assert abs(gold[names[3]] - gold[names[2]]) < 0.2, gold
  assert abs(kl[names[3]] - kl[names[2]]) < 0.5, kl
  # the large batch's samples in a quarter of the steps: below the small batch, at less KL
  assert gold[names[5]] < gold[names[1]] and kl[names[5]] < kl[names[1]], (gold, kl)
  # Table 4 as trained: DPO-Iter above DPO, and above every PPO, at several times its KL
  assert gold[experiment.DPO_ITER] > gold[experiment.DPO], gold
  assert gold[experiment.DPO_ITER] > max(gold[n] for n in names), gold
  assert kl[experiment.DPO_ITER] > 3 * max(kl[n] for n in names[:5]), kl
  # at matched KL too DPO-Iter (the frontier of its three runs) is above DPO (full run:
  # every seed). Not asserted: DPO-Iter's frontier against PPO at matched KL (full run:
  # above the chain's last PPO in 2 of 3 seeds; here PPO stops near 1 nat and is above)
  matched = {n: v["seeds"][0] for n, v in summary["matched_kl"].items()}
  assert matched[experiment.DPO_ITER_FRONTIER] > matched[experiment.DPO] + 0.1, matched
  # the reward model ranks held-out pairs better than chance (full run: 0.66-0.71)
  assert 0.6 < summary["reward model eval accuracy"]["mean"] < 0.8
