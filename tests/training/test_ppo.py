"""PPO: exact first-minibatch log-probs, the no-op update, learning with bounded KL, the
adaptive KL controller, and kill-and-resume."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.models import load_model
from jaxalign.training import setup
from jaxalign.training.ppo import Experience, ppo_loss, ppo_minibatch_step
from jaxalign.training.ppo_run import init_ppo_state, run_ppo
from jaxalign.training.rollout import sample_rollout
from tests.training import subprocess_runs


def _run(sft_and_rm, output_dir, *overrides):
  return load_config(RunConfig, None, [
      "task=ppo", f"output_dir={output_dir}", f"model.init_from={sft_and_rm['sft']}",
      f"online.reward_model={sft_and_rm['rm']}", "loop.log_every=1",
      "optimizer.learning_rate=1e-4", "ppo.rollout_batch_size=32", *overrides])


def _rollout(run, temperature):
  config, policy = setup.load_policy(run, {})
  state = init_ppo_state(run, config, policy)
  prompts = setup.build_prompt_rows(run, "train", 16)[0]
  batch = prompts.batch(np.arange(16), prompts.max_length)
  rollout = sample_rollout(config, policy, batch.tokens, batch.attention_mask,
                           jax.random.PRNGKey(0), max_new_tokens=16, temperature=temperature,
                           eos_id=config.eos_token_id)
  return config, state, rollout


def test_ratio_log_probs_equal_the_samplers_and_a_noop_update(sft_and_rm, tmp_path):
  run = _run(sft_and_rm, tmp_path, "ppo.temperature=0.7")
  config, state, rollout = _rollout(run, 0.7)
  mask = rollout.response_mask
  zeros = jnp.zeros(mask.shape, jnp.float32)
  experience = Experience(rollout.sequence, rollout.sequence_mask, mask,
                          rollout.sampler_logps, zeros, zeros, zeros)
  denominator = jnp.maximum(mask.sum(), 1).astype(jnp.float32)
  loss, metrics = ppo_loss(config, run.ppo, state.params, experience, denominator)
  # The ratio's log-probs (recomputed at the sampling temperature) equal the sampler's.
  np.testing.assert_allclose(metrics["ppo/ratio_mean"], 1.0, atol=1e-5)
  assert float(metrics["ppo/approx_kl"]) < 1e-10
  assert float(metrics["ppo/policy_loss"]) == 0.0  # zero advantages
  assert float(metrics["ppo/clip_fraction"]) == 0.0
  # Zero advantages, zero returns and a zero-init value head: nothing moves the policy.
  new_state, step_metrics = ppo_minibatch_step(config, run.ppo, state, experience)
  assert float(step_metrics["ppo/policy_loss"]) == 0.0
  assert float(step_metrics["ppo/value_loss"]) == 0.0


def test_ratio_log_probs_match_a_fresh_forward_exactly(sft_and_rm, tmp_path):
  from jaxalign.training.rollout import response_logps
  run = _run(sft_and_rm, tmp_path)
  config, state, rollout = _rollout(run, 1.0)
  P = rollout.prompt_tokens.shape[1]
  fresh = response_logps(config, state.params["policy"], rollout.sequence,
                         rollout.sequence_mask, P)
  live = np.asarray(rollout.response_mask, bool)
  np.testing.assert_allclose(np.asarray(fresh)[live], np.asarray(rollout.sampler_logps)[live],
                             atol=1e-5)


def test_ppo_raises_gold_reward_with_bounded_kl_and_adaptive_kl_tracks_target(
    sft_and_rm, tmp_path):
  target = 1.0
  run = _run(sft_and_rm, tmp_path, "loop.steps=30", "ppo.adaptive_kl=true",
             f"ppo.kl_target={target}", "ppo.kl_horizon=50", "ppo.kl_coef=0.05",
             "optimizer.learning_rate=1.5e-4")
  final = run_ppo(run, progress=False)
  with open(tmp_path / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  assert history[0]["ppo/first_minibatch_clip_fraction"] == 0.0
  early = np.mean([h["rollout/gold_reward"] for h in history[:3]])
  late = np.mean([h["rollout/gold_reward"] for h in history[-5:]])
  assert late > early + 0.5, (early, late)
  # Ziegler et al.'s controller: beta rises while KL > target and falls while KL < target.
  coef = 0.05
  for h in history:
    assert (h["ppo/kl_coef"] > coef) == (h["rollout/kl"] > target), h
    coef = h["ppo/kl_coef"]
  late_kl = np.mean([h["rollout/kl"] for h in history[-10:]])
  assert target / 4 < late_kl < 3 * target, late_kl
  assert np.isfinite(final["ppo/value_loss"])


@pytest.mark.slow  # two full PPO runs and a killed one: make test-all
def test_ppo_kill_and_resume_is_bit_identical(sft_and_rm, tmp_path):
  def command(out):
    return [sys.executable, "-m", "jaxalign.cli.main", "train", "ppo", "--no-progress",
            "--output-dir", str(out), "--set", f"model.init_from={sft_and_rm['sft']}",
            "--set", f"online.reward_model={sft_and_rm['rm']}", "--set", "loop.steps=12",
            "--set", "loop.checkpoint_every=2", "--set", "ppo.rollout_batch_size=32",
            "--set", "optimizer.learning_rate=1e-4"]
  subprocess_runs.run(command(tmp_path / "full"))
  killed = tmp_path / "killed"
  subprocess_runs.kill_after(command(killed), killed / "checkpoints" / "4")
  assert not (tmp_path / "killed" / "model").exists()
  resumed = subprocess_runs.run(command(tmp_path / "killed"))
  assert "resuming from step" in resumed.stdout
  _, a, _ = load_model(str(tmp_path / "full" / "model"))
  _, b, _ = load_model(str(tmp_path / "killed" / "model"))
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_ppo_with_lora_starts_at_the_base_reference_and_keeps_it(sft_and_rm, tmp_path):
  """``model.lora`` in PPO: the policy is the SFT base plus adapters (B = 0: iteration 1's
  KL to the reference, the base itself, is exactly 0 and the first ratio is 1); ``model/`` is
  the base outside the targets and ``W + A B alpha / r`` on them; the value head trains."""
  rank, alpha = 4, 16.0
  run = _run(sft_and_rm, tmp_path, "loop.steps=2", f"model.lora.rank={rank}",
             "model.lora.targets=q_proj,up_proj", "optimizer.learning_rate=1e-2")
  config, policy = setup.load_policy(run, {})
  state = init_ppo_state(run, config, policy)
  assert state.ref_params is None and state.base_params is not None  # no copy of the base
  run_ppo(run, progress=False)
  with open(tmp_path / "metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  assert history[0]["objective/kl"] == 0.0
  assert history[0]["ppo/first_minibatch_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
  _, base, _ = load_model(sft_and_rm["sft"])
  config, merged, _ = load_model(str(tmp_path / "model"))
  _, adapters, kind = load_model(str(tmp_path / "adapters"))
  assert kind == "lora_adapters" and config.lora is None
  moved = 0.0
  for path, value in jax.tree_util.tree_leaves_with_path(merged):
    names = [p.key for p in path]
    want = base
    for name in names:
      want = want[name]
    if names[-1] == "kernel" and names[-2] in ("q_proj", "up_proj"):
      node = adapters
      for name in names[:-1]:
        node = node[name]
      merged_want = np.asarray(want) + (alpha / rank) * (
          np.asarray(node["a"], np.float64) @ np.asarray(node["b"]))
      np.testing.assert_allclose(value, merged_want, atol=1e-6)
      moved = max(moved, float(np.abs(np.asarray(value) - np.asarray(want)).max()))
    else:
      np.testing.assert_array_equal(value, want, err_msg="/".join(names))
  assert moved > 1e-6  # the adapters trained
