"""Offline-to-online spectrum (refresh_every x reward-model refresh) on the synthetic task.

Unit tests of the pure helpers: the grid, the refresh cadence and the gold-label count
against hand computations, and the spending read from a run's log. The reduced run asserts
what the full run (docs/_drafts/online_spectrum.md; 3 seeds) measured: with the reward model
frozen, resampling the pairs from the policy beats offline DPO at the same 512 gold labels
(refresh 64 above offline, 16 above 64: every seed), but refreshing more often than every 16
steps does not help further (refresh 4 and 1 above 16 in 1 of 3 seeds); retraining the reward
model on gold-labelled on-policy pairs lifts the gold reward at every cadence where it
retrains (3 of 3 seeds, except refresh 16 every 4 refreshes: 2 of 3), at a larger KL and with
responses near the length cap (the gold reward is linear in token counts), for 1.1x to 10x
the gold labels; RLHFlow's recipe is above offline DPO (every seed).
"""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from experiments import online_spectrum as experiment

CONFIG = experiment.Config()


def test_grid_has_only_the_frozen_offline_cell():
  cells = experiment.cells(CONFIG)
  assert len(cells) == 1 + 4 * 3
  assert [c for c in cells if math.isinf(c[0])] == [(math.inf, 0)]
  names = experiment.policy_names(CONFIG)
  assert len(set(names)) == len(names) == 14 and names[-1] == experiment.RLHFLOW
  assert experiment.cell_name(16, 4) == "refresh 16, RM every 4"


def test_prompts_per_refresh_by_hand():
  # batch 16 x refresh_every, at least 32 (two batches), at most the 512 pairs
  assert [experiment.prompts_per_refresh(CONFIG, e) for e in (64, 32, 16, 4, 1)] == [
      512, 512, 256, 64, 32]


def test_retrainings_and_gold_labels_by_hand():
  # 96 steps: refresh_every 16 refreshes at steps 0, 16, ..., 80 (6 refreshes); the reward
  # model is retrained at refreshes 1..5 (every refresh) or refresh 4 (every 4)
  assert experiment.num_refreshes(96, 16) == 6
  assert experiment.planned_retrainings(96, 16, 1) == 5
  assert experiment.planned_retrainings(96, 16, 4) == 1
  assert experiment.planned_retrainings(96, 64, 4) == 0  # refreshes 0 and 1 only
  assert experiment.planned_retrainings(96, 1, 4) == 23  # refreshes 4, 8, ..., 92
  assert experiment.planned_retrainings(96, 1, 1) == 95
  assert experiment.planned_retrainings(96, math.inf, 1) == 0
  assert experiment.planned_retrainings(96, 4, 0) == 0
  assert experiment.num_refreshes(100, 64) == 2  # a partial last period still refreshes
  assert experiment.planned_gold_labels(CONFIG, 23) == 512 + 23 * 64


def test_spending_reads_the_log():
  history = [
      {"step": 0, "online/iteration": 0.0, "online/pairs": 32.0},
      {"step": 4, "online/iteration": 1.0, "online/rm_refresh_pairs": 60.0},
      {"step": 8, "online/iteration": 2.0, "online/rm_refresh_pairs": 62.0},
      # a retraining with too few pairs ends the run (online.on_few_pairs=stop): its labels
      # were drawn, the policy's samples of that refresh were not, and no retraining happened
      {"step": 12, "online/iteration": 3.0, "online/rm_refresh_pairs": 9.0,
       "online/stopped_early": 1.0}]
  spent = experiment.spending(CONFIG, history, 4, 2)
  assert spent == {"policy_steps": 12, "stopped_early": 1.0, "refreshes": 4,
                   "rm_retrainings": 2, "policy_samples": 3 * 64 * 2,
                   "rm_samples": 3 * 64 * 2, "gold_labels": 512 + 60 + 62 + 9,
                   "planned_gold_labels": 512 + 3 * 64}
  offline = experiment.spending(CONFIG, [{"step": 50, "train/loss": 0.6},
                                         {"step": 96, "train/loss": 0.5}], math.inf, 2)
  assert offline["policy_steps"] == 96 and offline["refreshes"] == 0
  assert offline["gold_labels"] == 512 and offline["policy_samples"] == 0


def test_cell_overrides_are_the_library_knobs():
  keys = experiment.online_overrides(CONFIG, "sft", "rm", 4, 1, 2)
  assert "online.refresh_every=4" in keys and "online.rm_refresh_every=1" in keys
  assert "online.prompts_per_refresh=64" in keys and "online.on_few_pairs=stop" in keys
  offline = experiment.online_overrides(CONFIG, "sft", "rm", math.inf, 0, 2)
  assert "online.refresh_every=inf" in offline
  assert not [k for k in offline if k.startswith("online.") and "refresh_every" not in k]
  from jaxalign.config import RunConfig, load_config
  run = load_config(RunConfig, None, keys)
  assert run.online.rm_refresh_prompts == CONFIG.rm_refresh_prompts
  assert run.loop.steps == CONFIG.policy_steps


@pytest.mark.slow  # 6 short runs: 170-470 s on the shared, loaded 2-core machine
def test_reduced_run(tmp_path):
  config = dataclasses.replace(experiment.QUICK, output_dir=str(tmp_path))
  experiment.run(config)
  assert os.path.getsize(tmp_path / "figure.png") > 0
  with open(tmp_path / "numbers.json") as f:
    numbers = json.load(f)
  entry = numbers["per_seed"]["0"]
  names = experiment.policy_names(config)
  assert list(numbers["summary"]["policies"]) == [experiment.REFERENCE, *names]
  for name in [experiment.REFERENCE, *names]:
    assert {"gold_reward", "kl", "rm_score", "length"} <= set(entry[name])
    assert all(np.isfinite(v) for v in entry[name].values()), name
  assert entry[experiment.REFERENCE]["kl"] == pytest.approx(0.0, abs=1e-4)
  # the spending, read from the logs, agrees with the config's count
  for name in names:
    spent = entry[name]
    every, rm_every, _ = experiment._spec(config, name)
    if not spent["stopped_early"]:
      assert spent["policy_steps"] == config.policy_steps, name
      assert spent["refreshes"] == experiment.num_refreshes(config.policy_steps, every)
      assert spent["rm_retrainings"] == experiment.planned_retrainings(config.policy_steps,
                                                                       every, rm_every)
    assert config.num_pairs <= spent["gold_labels"] <= spent["planned_gold_labels"], name
  gold = {name: entry[name]["gold_reward"] for name in [experiment.REFERENCE, *names]}
  frozen = lambda every: experiment.cell_name(every, 0)
  refreshed = lambda every: experiment.cell_name(every, 1)
  # offline DPO improves on the reference; on-policy pairs (frozen RM, same labels) beat it
  assert gold["offline"] > gold[experiment.REFERENCE] + 0.5, gold
  assert gold[frozen(16)] > gold["offline"] + 0.5, gold
  # frozen RM: every step instead of every 16 changes little (full run: -1.6 to -0.2)
  assert abs(gold[frozen(1)] - gold[frozen(16)]) < 2.5, gold
  # a refreshed discriminator lifts the gold reward, with responses near the length cap
  for every in (16, 1):
    assert gold[refreshed(every)] > gold[frozen(every)] + 0.5, gold
    assert entry[refreshed(every)]["length"] > entry[frozen(every)]["length"] + 3, every
    assert entry[refreshed(every)]["gold_labels"] > entry[frozen(every)]["gold_labels"]
  assert entry[refreshed(1)]["gold_labels"] > 5 * config.num_pairs
  # RLHFlow's recipe (3 iterations, best vs worst of 4, frozen RM) beats offline DPO
  assert gold[experiment.RLHFLOW] > gold["offline"], gold
