"""Every online-DPO labeller x reference mode either runs two refreshes or is rejected at
config time (before any data is built) with a message naming the keys; the CLI shows such a
rejection as one line and exits 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.training.online_dpo import check_online_config
from jaxalign.training.runs import run_training
from tests.training import subprocess_runs

LABELLERS = ("reward_model", "gold", "implicit")
REFERENCES = ("fixed", "previous_iterate", "ema")
PROMPTS = 8  # per refresh; best_worst pairs: at most one per prompt
TINY = ["data.batch_size=8", "data.num_eval=16", "data.eval_batch_size=16", "loop.log_every=1",
        "optimizer.learning_rate=1e-3"]


@pytest.fixture(scope="module")
def dpo_start(sft_and_rm, tmp_path_factory):
  """A policy that differs from the SFT model (a few offline DPO steps from it): the start
  of an implicit-labeller run whose reference is the SFT model."""
  out = tmp_path_factory.mktemp("dpo_start")
  run_training(load_config(RunConfig, None, TINY + [
      "task=dpo", f"output_dir={out}", f"model.init_from={sft_and_rm['sft']}", "loop.steps=4"]),
      progress=False)
  return str(out / "model")


def _history(output_dir):
  with open(output_dir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def _online(sft_and_rm, output_dir, *overrides):
  return load_config(RunConfig, None, TINY + [
      "task=online-dpo", f"output_dir={output_dir}", f"model.init_from={sft_and_rm['sft']}",
      f"online.reward_model={sft_and_rm['rm']}", "loop.steps=4", "online.refresh_every=2",
      f"online.prompts_per_refresh={PROMPTS}", "online.samples_per_prompt=4",
      "online.max_new_tokens=8", *overrides])


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("labeller", LABELLERS)
def test_every_labeller_and_reference_runs_two_refreshes(sft_and_rm, dpo_start, tmp_path,
                                                         labeller, reference):
  extra = ([f"model.init_from={dpo_start}", f"model.reference_from={sft_and_rm['sft']}"]
           if labeller == "implicit" else [])
  run_training(_online(sft_and_rm, tmp_path, f"online.labeller={labeller}",
                       f"online.reference={reference}", *extra), progress=False)
  history = _history(tmp_path)
  refreshes = [h for h in history if "online/iteration" in h]
  assert [(h["step"], h["online/iteration"]) for h in refreshes] == [(0, 0.0), (2, 1.0)]
  for h in refreshes:  # every sampled prompt is a pair or a counted tie
    assert h["online/pairs"] + h["online/ties_skipped"] == PROMPTS, h
    assert h["online/pairs"] >= 8, h
    if labeller == "gold":  # the chosen sample is the one of higher gold reward (ties: skipped)
      assert h["online/gold_agreement"] == 1.0, h
    else:
      assert 0.0 <= h["online/gold_agreement"] <= 1.0, h
  if labeller == "implicit":  # labelled against the reference before the update: not all 0
    assert all(h["online/label_mean"] != 0.0 for h in refreshes), refreshes
  train = {h["step"]: h for h in history if "train/loss" in h}
  assert sorted(train) == [1, 2, 3, 4] and all(np.isfinite(h["train/loss"])
                                               for h in train.values())
  if reference == "previous_iterate":
    # The new pairs' cached reference log-probs come from the updated reference (the policy
    # at step 2), so the first step after the refresh has zero implicit rewards.
    assert abs(train[3]["train/rewards/chosen"]) < 1e-4, train[3]
    assert abs(train[3]["train/rewards/rejected"]) < 1e-4, train[3]
    assert abs(train[2]["train/rewards/chosen"]) > 1e-3 or labeller != "implicit"


def _config(*overrides):
  return load_config(RunConfig, None, [
      "task=online-dpo", "model.init_from=runs/sft/model", "online.refresh_every=2",
      "online.labeller=gold", *overrides])


REJECTED = {
    "implicit_default_reference": (
        ["online.labeller=implicit"], ["online.labeller=implicit", "model.reference_from"]),
    "implicit_reference_is_start": (
        ["online.labeller=implicit", "model.reference_from=runs/sft/model/"],
        ["model.reference_from", "model.init_from"]),
    "implicit_simpo": (
        ["online.labeller=implicit", "model.reference_from=runs/sft2", "loss.name=simpo"],
        ["online.labeller=implicit", "loss.name=simpo"]),
    "implicit_orpo": (
        ["online.labeller=implicit", "model.reference_from=runs/sft2", "loss.name=orpo"],
        ["online.labeller=implicit", "loss.name=orpo"]),
    "previous_iterate_reference_free": (
        ["online.reference=previous_iterate", "loss.name=simpo"],
        ["online.reference=previous_iterate", "loss.name=simpo"]),
    "ema_reference_free": (["online.reference=ema", "loss.name=orpo"],
                           ["online.reference=ema", "loss.name=orpo"]),
    "ema_rate": (["online.reference=ema", "online.reference_ema=0"], ["online.reference_ema"]),
    "temperature_zero": (["online.temperature=0"], ["online.temperature"]),
    "temperature_negative": (["online.temperature=-0.5"], ["online.temperature"]),
    "reward_model_missing": (["online.labeller=reward_model"], ["online.reward_model"]),
    "gold_needs_synthetic": (["data.source=files"], ["online.labeller=gold", "data.source"]),
    "too_few_prompts": (["online.prompts_per_refresh=3", "data.batch_size=4"],
                        ["online.prompts_per_refresh", "data.batch_size"]),
    "rm_refresh_without_rm": (["online.rm_refresh_every=1"],
                              ["online.rm_refresh_every", "online.reward_model"]),
    "rm_refresh_not_labelling": (["online.rm_refresh_every=1", "online.reward_model=runs/rm"],
                                 ["online.rm_refresh_every", "online.labeller"]),
    "rm_refresh_few_prompts": (
        ["online.labeller=reward_model", "online.reward_model=runs/rm",
         "online.rm_refresh_every=1", "online.rm_refresh_prompts=2"],
        ["online.rm_refresh_prompts", "data.batch_size"]),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_configs_that_cannot_produce_labels_are_rejected_naming_the_keys(name, tmp_path):
  overrides, keys = REJECTED[name]
  run = _config(f"output_dir={tmp_path / 'run'}", *overrides)
  with pytest.raises(ValueError) as error:
    check_online_config(run)
  for key in keys:
    assert key in str(error.value), (key, str(error.value))
  with pytest.raises(ValueError):  # run_training checks first: nothing built or written
    run_training(run, progress=False)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("reference", REFERENCES)
def test_implicit_labeller_without_a_distinct_reference_is_rejected_in_every_mode(reference):
  with pytest.raises(ValueError, match="model.reference_from"):
    check_online_config(_config("online.labeller=implicit", f"online.reference={reference}"))


def test_cli_rejects_an_unlabellable_config_with_exit_2_naming_the_key(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", "online-dpo", "--no-progress",
       "--output-dir", str(tmp_path / "run"), "--set", "model.init_from=runs/sft/model",
       "--set", "online.refresh_every=2", "--set", "online.labeller=gold",
       "--set", "online.temperature=0"],
      env=subprocess_runs.ENV, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: "), result.stderr
  assert "online.temperature" in lines[0]
  assert not (tmp_path / "run").exists()  # rejected before any training (or data)
