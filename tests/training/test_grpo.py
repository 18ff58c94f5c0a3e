"""The critic-free trainer's mechanics on the synthetic task (gold reward): the first ratio is
1 on the sampler's top-k / top-p support, micro-batching changes nothing, the zero-variance
and truncation filters drop exactly the rows they name (and the loss's denominators follow),
RLOO / REINFORCE++ advantages are their formulas, kill-and-resume is bit-identical, and bad
settings are one-line errors before any work. Learning on the verifiable task:
``test_grpo_verifiable.py``."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.models import load_model
from jaxalign.training import setup
from jaxalign.training.grpo import (grpo_loss, grpo_minibatch_step, grpo_update,
                                    group_advantages, make_group_experience)
from jaxalign.training.grpo_run import init_grpo_state
from jaxalign.training.rollout import sample_rollout
from tests.training import subprocess_runs

PROMPTS, GROUP = 8, 4


def _run(output_dir, *overrides):
  return load_config(RunConfig, None, [
      "task=grpo", f"output_dir={output_dir}", "model.embed_dim=32", "model.num_layers=1",
      f"grpo.prompts_per_iteration={PROMPTS}", f"grpo.group_size={GROUP}",
      "grpo.max_new_tokens=10", "grpo.temperature=0.9", *overrides])


def _rollout(run, policy, config, seed=0):
  rows = setup.build_prompt_rows(run, "train", run.grpo.max_new_tokens)[0]
  prompts = rows.batch(np.arange(PROMPTS), rows.max_length)
  spec = run.grpo
  return sample_rollout(config, policy, prompts.tokens, prompts.attention_mask,
                        jax.random.PRNGKey(seed), max_new_tokens=spec.max_new_tokens,
                        temperature=spec.temperature, eos_id=config.eos_token_id,
                        top_k=spec.top_k, top_p=spec.top_p, num_samples=GROUP)


def _policy(run, scale=3.0):
  """A random tiny policy, its weights scaled so that top-p truncates."""
  config, policy = setup.load_policy(run, setup.vocab_overrides(run))
  return config, jax.tree_util.tree_map(lambda x: scale * x if x.ndim > 1 else x, policy)


def _rewards(seed=0):
  return jax.random.normal(jax.random.PRNGKey(100 + seed), (PROMPTS * GROUP,))


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_first_update_ratio_is_one_on_the_top_k_top_p_support(tmp_path, compute_dtype):
  run = _run(tmp_path, f"model.compute_dtype={compute_dtype}", "grpo.top_k=20",
             "grpo.top_p=0.9", "grpo.num_iterations=2", "optimizer.learning_rate=1e-2")
  config, policy = _policy(run)
  state = init_grpo_state(run, config, policy)
  rollout = _rollout(run, policy, config)
  live = np.asarray(rollout.response_mask) > 0
  assert np.asarray(rollout.kept_counts)[live].max() <= 20
  assert np.asarray(rollout.kept_counts)[live].min() < 20  # top-p cuts further
  experience, metrics = make_group_experience(config, run.grpo, state.params, None, rollout,
                                              _rewards())
  if compute_dtype == "float32":  # the trainer's truncated log-probs are the sampler's
    assert float(metrics["rollout/logprob_mismatch_max"]) < 1e-5, metrics
  _, history = grpo_update(config, run.grpo, state, experience, jax.random.PRNGKey(1))
  first, second = ({k: float(v) for k, v in h.items()} for h in history)
  assert abs(first["grpo/ratio_mean"] - 1.0) < 1e-6, first
  assert first["grpo/clip_ratio/region_mean"] == 0.0, first
  assert abs(second["grpo/ratio_mean"] - 1.0) > 1e-4, second  # the first step moved it


@pytest.mark.parametrize("overrides", [
    ("grpo.aggregation=token_mean",),
    ("grpo.aggregation=sequence_mean", "grpo.filter_zero_variance=true"),
    ("grpo.aggregation=constant", "grpo.importance_level=sequence", "grpo.kl_coef=0.1"),
])
def test_micro_batches_change_no_grpo_metric_or_gradient(tmp_path, overrides):
  run = _run(tmp_path, "optimizer.name=sgd", "optimizer.learning_rate=1.0",
             "optimizer.grad_clip=none", *overrides)
  config, policy = _policy(run, scale=1.0)
  state = init_grpo_state(run, config, policy)
  rewards = _rewards().at[:GROUP].set(1.0)  # one zero-variance group
  experience, _ = make_group_experience(config, run.grpo, state.params, state.ref_params,
                                        _rollout(run, policy, config), rewards)
  results = []
  for micro_batches in (1, 4):
    fresh = init_grpo_state(run, config, setup.copy_tree(policy))
    results.append(grpo_minibatch_step(config, run.grpo, fresh, experience, micro_batches))
  (whole, metrics), (split, split_metrics) = results
  assert metrics.keys() == split_metrics.keys()
  for name in metrics:
    np.testing.assert_allclose(split_metrics[name], metrics[name], atol=1e-5, err_msg=name)
  moved = 0.0
  for a, b, c in zip(*(jax.tree_util.tree_leaves(p) for p in
                       (whole.params, split.params, state.params))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(c)).max()))
  assert moved > 1e-4  # the step did something


def test_filters_drop_zero_variance_groups_and_truncated_samples(tmp_path):
  run = _run(tmp_path, "grpo.filter_zero_variance=true", "grpo.mask_truncated=true",
             "grpo.aggregation=sequence_mean", "grpo.max_new_tokens=4")
  config, policy = _policy(run, scale=1.0)
  state = init_grpo_state(run, config, policy)
  rollout = _rollout(run, policy, config)
  has_eos = np.asarray(rollout.has_eos)
  assert 0 < has_eos.sum() < len(has_eos)  # some samples stop, some hit max_new_tokens
  rewards = np.array(_rewards())
  rewards[:GROUP] = 0.5                    # groups 0 and 3 carry no signal
  rewards[3 * GROUP:4 * GROUP] = -1.0
  experience, metrics = make_group_experience(config, run.grpo, state.params, None, rollout,
                                              jnp.asarray(rewards))
  group = np.arange(PROMPTS * GROUP) // GROUP
  keep = ~np.isin(group, [0, 3]) & has_eos
  mask = np.asarray(experience.mask)
  np.testing.assert_array_equal(mask.sum(axis=1) > 0, keep)
  np.testing.assert_array_equal(mask[keep], np.asarray(rollout.response_mask)[keep])
  assert float(metrics["rollout/zero_variance_groups"]) == pytest.approx(2 / PROMPTS)
  assert float(metrics["rollout/truncated_fraction"]) == pytest.approx(1 - has_eos.mean())
  assert float(metrics["rollout/kept_fraction"]) == pytest.approx(keep.mean())
  # Original GRPO's sequence mean is over the sequences that still count: at ratio 1 the
  # loss is -mean over kept rows of the advantage (one value per sequence).
  loss, _ = grpo_loss(config, run.grpo, state.params, experience, jnp.maximum(mask.sum(), 1),
                      jnp.float32(keep.sum()))
  expected = -np.asarray(experience.advantages)[keep].mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)


def test_rloo_and_reinforce_pp_advantages_are_their_formulas(tmp_path):
  rewards = np.asarray(_rewards(), np.float64)
  grouped = rewards.reshape(PROMPTS, GROUP)
  mask = jnp.ones((PROMPTS * GROUP, 3))
  rloo = _run(tmp_path, "grpo.advantage=rloo").grpo
  leave_one_out = (grouped - (grouped.sum(1, keepdims=True) - grouped) / (GROUP - 1)).ravel()
  np.testing.assert_allclose(group_advantages(rloo, jnp.asarray(rewards), mask),
                             leave_one_out, rtol=1e-5, atol=1e-6)
  grpo = _run(tmp_path).grpo  # TRL: (r - group mean) / (unbiased group std + eps)
  standardised = ((grouped - grouped.mean(1, keepdims=True))
                  / (grouped.std(1, ddof=1, keepdims=True) + grpo.advantage_eps)).ravel()
  np.testing.assert_allclose(group_advantages(grpo, jnp.asarray(rewards), mask),
                             standardised, rtol=1e-5, atol=1e-6)
  # REINFORCE++-baseline: subtract the group mean, then whiten over the batch's tokens.
  baseline = _run(tmp_path, "grpo.advantage=reinforce++_baseline").grpo
  centred = (grouped - grouped.mean(1, keepdims=True)).ravel()
  whitened = (centred - centred.mean()) / (centred.std() + 1e-8)
  out = np.asarray(group_advantages(baseline, jnp.asarray(rewards), mask))
  assert out.shape == (PROMPTS * GROUP, 3)
  np.testing.assert_allclose(out, np.repeat(whitened[:, None], 3, axis=1), rtol=1e-4,
                             atol=1e-4)


@pytest.mark.slow  # three training subprocesses (PPO and DPO kill/resume stay in the fast set)
def test_grpo_kill_and_resume_is_bit_identical(tmp_path):
  def command(out):
    return subprocess_runs.train_command("grpo", out, {
        "model.embed_dim": 32, "model.num_layers": 1, "loop.steps": 8,
        "loop.checkpoint_every": 2, "grpo.prompts_per_iteration": PROMPTS,
        "grpo.group_size": GROUP, "grpo.max_new_tokens": 8, "grpo.num_iterations": 2,
        "grpo.kl_coef": 0.05, "grpo.ref_ema": 0.1, "optimizer.learning_rate": 1e-3})
  subprocess_runs.run(command(tmp_path / "full"))
  killed = tmp_path / "killed"
  subprocess_runs.kill_after(command(killed), killed / "checkpoints" / "4")
  assert not (killed / "model").exists()
  resumed = subprocess_runs.run(command(killed))
  assert "resuming from step" in resumed.stdout
  _, a, _ = load_model(str(tmp_path / "full" / "model"))
  _, b, _ = load_model(str(killed / "model"))
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with open(tmp_path / "full" / "metrics.jsonl") as f:
    full = [json.loads(line) for line in f]
  with open(killed / "metrics.jsonl") as f:
    rerun = [json.loads(line) for line in f]
  pick = lambda rows: [(r["step"], r.get("rollout/reward"), r.get("rollout/kl"))
                       for r in rows if "rollout/reward" in r]
  assert pick(rerun) == pick(full) and len(pick(full)) >= 1


@pytest.mark.parametrize("task, setting, key", [
    ("rloo", "grpo.advantage=grpo", "grpo.advantage"),
    ("grpo", "grpo.group_size=1", "grpo.group_size"),
    ("grpo", "grpo.num_minibatches=3", "grpo.num_minibatches"),
    ("grpo", "rewards.correct=1", "rewards.correct"),
    ("grpo", "grpo.ref_ema=0.1", "grpo.ref_ema"),
])
def test_bad_grpo_settings_exit_2_before_any_work(tmp_path, task, setting, key):
  out = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", task, "--no-progress",
       "--output-dir", str(out), "--set", setting], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert key in result.stderr and result.stderr.count("\n") == 1, result.stderr
  assert not out.exists()
