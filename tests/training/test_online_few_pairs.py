"""``online.on_few_pairs``: a refresh that forms fewer pairs than one batch (here every
sample of a prompt is the same response, so every pair is a tie) is an error naming the
knob by default, and with ``stop`` ends the run there as a finished run: the refresh's
metrics logged with ``online/stopped_early``, the policy evaluated and saved untrained."""

import json
import os

import jax
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.models import load_model
from jaxalign.training.runs import run_training

# A random tiny policy sampled at T = 1e-4: greedy, so the 4 samples of a prompt tie.
TIES = ["task=online-dpo", "model.embed_dim=32", "model.num_layers=1", "data.batch_size=8",
        "data.num_train=64", "data.num_eval=16", "data.eval_batch_size=16", "loop.steps=6",
        "loop.log_every=1", "loop.checkpoint_every=0", "online.labeller=gold",
        "online.refresh_every=3", "online.prompts_per_refresh=8",
        "online.samples_per_prompt=4", "online.max_new_tokens=8", "online.temperature=1e-4"]


def test_too_few_pairs_raise_by_default_naming_the_knob(tmp_path):
  with pytest.raises(RuntimeError, match="online.on_few_pairs=stop"):
    run_training(load_config(RunConfig, None, TIES + [f"output_dir={tmp_path}"]),
                 progress=False)


def test_on_few_pairs_stop_ends_the_run_as_a_finished_run(tmp_path):
  run = load_config(RunConfig, None, TIES + [f"output_dir={tmp_path}",
                                             "online.on_few_pairs=stop"])
  result = run_training(run, progress=False)
  with open(tmp_path / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  stopped = [h for h in history if "online/stopped_early" in h]
  assert len(stopped) == 1 and stopped[0]["step"] == 0, history
  assert stopped[0]["online/pairs"] == 0 and stopped[0]["online/ties_skipped"] == 8
  assert np.isfinite(stopped[0]["online/gold_reward"])
  assert not [h for h in history if "train/loss" in h]  # no step ran
  assert "eval/loss" in result and os.path.exists(tmp_path / "eval.json")
  with open(tmp_path / "eval.json") as f:
    assert json.load(f) == pytest.approx(result)
  # The saved policy is the start policy (the seeded preset), untrained.
  from jaxalign.training import setup
  _, start = setup.load_policy(run, setup.vocab_overrides(run))
  _, saved, _ = load_model(str(tmp_path / "model"))
  for a, b in zip(jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A rerun of the same config finds it complete.
  assert run_training(run, progress=False) == pytest.approx(result)


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny_rm")
  run_training(load_config(RunConfig, None, [
      "task=rm", f"output_dir={folder}", "model.embed_dim=32", "model.num_layers=1",
      "data.batch_size=8", "data.num_train=16", "data.num_eval=16", "loop.steps=1",
      "loop.checkpoint_every=0"]), progress=False)
  return str(folder / "model")


def _gold_ties(monkeypatch):
  """Every gold score 0: a reward-model retraining's pairs all tie (the policy's pairs are
  labelled by the reward model, so they do not)."""
  from jaxalign.training.online_dpo import OnlineRefresher
  monkeypatch.setattr(OnlineRefresher, "_gold",
                      lambda self, prompts, tokens, masks: np.zeros(tokens.shape[0]))


def _rm_ties(tmp_path, reward_model, *overrides):
  return load_config(RunConfig, None, TIES[:-1] + [
      f"output_dir={tmp_path}", "online.labeller=reward_model",
      f"online.reward_model={reward_model}", "online.rm_refresh_every=1",
      "online.rm_refresh_prompts=8", "online.rm_refresh_steps=1", *overrides])


def test_too_few_reward_model_pairs_raise_naming_both_knobs(tmp_path, tiny_reward_model,
                                                            monkeypatch):
  _gold_ties(monkeypatch)
  with pytest.raises(RuntimeError, match="raise online.rm_refresh_prompts .*on_few_pairs=stop"):
    run_training(_rm_ties(tmp_path, tiny_reward_model), progress=False)


def test_on_few_pairs_stop_also_covers_the_reward_model_retraining(tmp_path, tiny_reward_model,
                                                                   monkeypatch):
  _gold_ties(monkeypatch)
  result = run_training(_rm_ties(tmp_path, tiny_reward_model, "online.on_few_pairs=stop"),
                        progress=False)
  with open(tmp_path / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  stopped = [h for h in history if "online/stopped_early" in h]
  # the first retraining (refresh 1, step 3) forms no pair: the run ends there, trained 3 steps
  assert len(stopped) == 1 and stopped[0]["step"] == 3, history
  assert stopped[0]["online/rm_refresh_pairs"] == 0
  assert stopped[0]["online/rm_refresh_ties_skipped"] == 8
  assert max(h["step"] for h in history if "train/loss" in h) == 3
  assert "eval/loss" in result and os.path.exists(tmp_path / "model")
