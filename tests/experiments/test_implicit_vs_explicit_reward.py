"""Lin et al. 2024 on the synthetic task: implicit (DPORM) vs explicit (EXRM) reward.

The reduced run (one 1 x 32 model, two seeds, one beta, 100 steps) checks the structure of
``numbers.json`` (the issue's public API), recomputes one split's EXRM and DPORM accuracy by
hand from the saved models and gold-labelled pairs, and asserts only what both the paper
claims qualitatively and the full run shows (docs/reproductions.md; 3 sizes, 3 seeds, 4
betas): EXRM ranks held-out pairs better than DPORM under every shift (every size and seed of
the full run), and online DPO labelled by EXRM ends with a higher gold reward than the same
loop labelled by DPORM (every seed). Where the full run contradicts the paper (DPORM is 7-10
points worse in distribution too, not comparable) the test asserts what we measured. The
full run's wider gap under response shift is not asserted: the reduced run does not show it.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import implicit_vs_explicit_reward as experiment
from jaxalign.data import SyntheticTask, SyntheticTaskConfig
from jaxalign.models import RewardModel, Transformer, load_model


def _response_logps(config, params, batch, side: str) -> np.ndarray:
  """``sum_t log pi(y_t | x, y_<t)`` over the response tokens, from the logits by hand."""
  tokens = getattr(batch, f"{side}_tokens")
  logits = Transformer(config).apply({"params": params}, tokens,
                                     attention_mask=getattr(batch, f"{side}_attention_mask"))
  logps = np.asarray(jax.nn.log_softmax(logits[:, :-1], axis=-1))  # [B, T-1, V]
  token_logps = np.take_along_axis(logps, tokens[:, 1:, None], axis=-1)[..., 0]
  return (token_logps * getattr(batch, f"{side}_loss_mask")[:, 1:]).sum(-1)


def _check_by_hand(numbers: dict, runs: str, config) -> None:
  """EXRM and DPORM accuracy of seed 0 on one split, recomputed from the saved models."""
  task = SyntheticTask(SyntheticTaskConfig(seed=0))
  rows = experiment.test_splits(config, task)["response_shift"]
  pairs = task.preference_pairs(config.num_test_pairs, 1002, response_shift=config.response_shift)
  assert np.all(pairs.chosen_rewards > pairs.rejected_rewards)  # gold labels, noiseless
  batch = rows.batch(np.arange(len(rows)), rows.max_length)
  seed0 = numbers["accuracy"]["small"]["response_shift"]
  rm_config, rm_params, _ = load_model(f"{runs}/small/seed0/rm/model")
  score = lambda side: np.asarray(RewardModel(rm_config).apply(
      {"params": rm_params}, getattr(batch, f"{side}_tokens"),
      getattr(batch, f"{side}_attention_mask")))
  exrm = np.mean(score("chosen") > score("rejected"))
  beta = config.betas[0]
  config_, ref_params, _ = load_model(f"{runs}/small/seed0/sft/model")
  _, params, _ = load_model(f"{runs}/small/seed0/dpo_beta{beta}/model")
  margin = sum(sign * (_response_logps(config_, params, batch, side)
                       - _response_logps(config_, ref_params, batch, side))
               for sign, side in ((1, "chosen"), (-1, "rejected")))
  dporm = np.mean(margin > 0)
  tolerance = 2.0 / len(rows)  # a near-tie may flip between two float32 passes
  assert abs(exrm - seed0["exrm_accuracy"]["per_seed"][0]) <= tolerance, exrm
  assert abs(dporm - seed0["dporm_accuracy"]["per_seed"][0]) <= tolerance, dporm


@pytest.mark.slow  # 20 short training runs: 65-85 s alone on 2 cores
def test_reduced_run(tmp_path):
  config = dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path / "out"),
                               runs_dir=str(tmp_path / "runs"))
  experiment.run(config)
  assert (tmp_path / "out" / "figure.png").exists()
  numbers = json.loads((tmp_path / "out" / "numbers.json").read_text())
  assert set(numbers["accuracy"]) == {"small"}
  accuracy = numbers["accuracy"]["small"]
  for split in experiment.SPLITS:
    for key in ("exrm_accuracy", "dporm_accuracy"):
      entry = accuracy[split][key]
      assert len(entry["per_seed"]) == len(config.seeds)
      assert np.isclose(entry["mean"], np.mean(entry["per_seed"]))
      assert all(0.0 <= a <= 1.0 for a in entry["per_seed"])
  _check_by_hand(numbers, str(tmp_path / "runs"), config)

  # both rewards learned something, in distribution and out
  for split in experiment.SPLITS:
    assert accuracy[split]["dporm_accuracy"]["mean"] > 0.55, (split, accuracy[split])
    assert accuracy[split]["exrm_accuracy"]["mean"] > 0.7, (split, accuracy[split])
  # EXRM at least as accurate as DPORM under every shift (the paper; every size in our full
  # run), and in distribution too (ours, not the paper: DPORM lags there as well)
  for split in experiment.SPLITS:
    assert accuracy[split]["exrm_minus_dporm"]["mean"] > 0.03, (split, accuracy[split])
  assert accuracy["shifted_mean_exrm_minus_dporm"]["mean"] > 0.03

  # online DPO labelled by EXRM ends above the same loop labelled by DPORM
  online = numbers["online"]
  final = {labeller: online[labeller]["final_held_out"]["gold_reward"]["mean"]
           for labeller in experiment.LABELLERS}
  assert final["reward_model"] > final["implicit"] + 1.0, final
  curve = online["reward_model"]["gold_reward_per_refresh"]["mean_over_running_seeds"]
  assert curve[-1] > curve[0], curve
