"""PPO's numerics: the KL at a sampling temperature, a reference that is not the start policy,
the controller reading the penalty's estimator, bf16 rollouts scored in the training layout,
a float32 EMA reference, micro-batching, and config errors before any work."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.models import CheckpointError, Transformer, init_params, load_model, save_model
from jaxalign.models import tiny_gpt2
from jaxalign.training import setup
from jaxalign.training.ppo import (ema_reference, ema_update, make_experience,
                                   ppo_minibatch_step, ppo_update)
from jaxalign.training.ppo_run import init_ppo_state, ppo_iteration
from jaxalign.training.rollout import sample_rollout


def _run(output_dir, *overrides):
  return load_config(RunConfig, None, [
      "task=ppo", f"output_dir={output_dir}", "loop.log_every=1",
      "optimizer.learning_rate=1e-4", "ppo.rollout_batch_size=16", "ppo.max_new_tokens=16",
      *overrides])


def _prompts(run, count=16):
  rows = setup.build_prompt_rows(run, "train", run.ppo.max_new_tokens)[0]
  return rows.batch(np.arange(count), rows.max_length)


def _experience(run, state, config, rm, seed=0):
  prompts = _prompts(run)
  rollout = sample_rollout(config, state.params["policy"], prompts.tokens,
                           prompts.attention_mask, jax.random.PRNGKey(seed),
                           max_new_tokens=run.ppo.max_new_tokens,
                           temperature=run.ppo.temperature, eos_id=config.eos_token_id)
  experience, _, metrics = make_experience(config, rm[0], run.ppo, state.params,
                                           state.ref_params, rm[1], rollout,
                                           state.extras["kl_coef"])
  return rollout, experience, {k: float(v) for k, v in metrics.items()}


def _sequence_logps(config, params, rollout, temperature):
  """Independent: full forward, float64 log-softmax of logits / T, summed over the response."""
  P = rollout.prompt_tokens.shape[1]
  logits = Transformer(config).apply({"params": params}, rollout.sequence,
                                     attention_mask=rollout.sequence_mask)
  logits = np.asarray(logits, np.float64)[:, P - 1:-1] / temperature  # [B, N, V]
  logits -= logits.max(axis=-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
  tokens = np.asarray(rollout.sequence)[:, P:]
  picked = np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
  return (picked * np.asarray(rollout.response_mask)).sum(axis=1)  # [B]


def test_rollout_kl_at_temperature_is_the_tempered_kl_to_reference_from(sft_and_rm, tmp_path):
  # A flat policy (random init) against a peaked reference (the SFT model), at T = 0.5.
  run = _run(tmp_path, "ppo.temperature=0.5", f"model.reference_from={sft_and_rm['sft']}")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run))
  state = init_ppo_state(run, config, policy)
  _, sft, _ = load_model(sft_and_rm["sft"])
  for a, b in zip(jax.tree_util.tree_leaves(state.ref_params), jax.tree_util.tree_leaves(sft)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # model.reference_from
  rm = setup.load_reward_model(sft_and_rm["rm"])
  rollout, _, metrics = _experience(run, state, config, rm)
  policy_t = _sequence_logps(config, policy, rollout, 0.5)
  ref_t = _sequence_logps(config, sft, rollout, 0.5)
  estimate = float(np.mean(policy_t - ref_t))  # Monte Carlo KL(pi_T || pi_ref,T)
  assert estimate > 0.5
  np.testing.assert_allclose(metrics["rollout/kl"], estimate, rtol=1e-4)
  np.testing.assert_allclose(metrics["objective/kl"], estimate, rtol=1e-4)  # the penalty's
  # The statistic of temperature-1 log-probs on the same samples is another number.
  untempered = float(np.mean(_sequence_logps(config, policy, rollout, 1.0)
                             - _sequence_logps(config, sft, rollout, 1.0)))
  assert abs(untempered - estimate) > 0.25, (untempered, estimate)


def test_a_reference_of_another_architecture_is_a_clear_error(sft_and_rm, tmp_path):
  config, params, _ = load_model(sft_and_rm["sft"])
  small = config.replace(num_layers=1)
  save_model(str(tmp_path / "small"), small, init_params(small, jax.random.PRNGKey(0)))
  run = _run(tmp_path, f"model.init_from={sft_and_rm['sft']}",
             f"model.reference_from={tmp_path / 'small'}")
  with pytest.raises(CheckpointError, match="model.reference_from=.*does not match the policy"):
    init_ppo_state(run, config, params)


def test_adaptive_controller_reads_the_penalty_estimator(sft_and_rm, tmp_path):
  base = [f"model.reference_from={sft_and_rm['sft']}", "ppo.kl_estimator=k3",
          "ppo.temperature=0.7", "ppo.epochs=1", "ppo.num_minibatches=1"]
  rm = setup.load_reward_model(sft_and_rm["rm"])
  probe = _run(tmp_path / "probe", *base)
  config, policy = setup.load_policy(probe, setup.vocab_overrides(probe))
  prompts = _prompts(probe)
  fresh = lambda run: init_ppo_state(run, config, setup.copy_tree(policy))  # steps donate
  _, first = ppo_iteration(probe, config, rm, fresh(probe), prompts)
  k1, k3 = first["rollout/kl"], first["objective/kl"]
  assert abs(k1 - k3) > 0.2, (k1, k3)
  # A target between the two: only the estimator the penalty uses decides the direction.
  target, horizon = (k1 + k3) / 2, 100.0
  run = _run(tmp_path / "adaptive", *base, "ppo.adaptive_kl=true", f"ppo.kl_target={target}",
             f"ppo.kl_horizon={horizon}", "ppo.kl_coef=0.05")
  _, metrics = ppo_iteration(run, config, rm, fresh(run), prompts)
  assert metrics["objective/kl"] == pytest.approx(k3, rel=1e-6)
  error = np.clip(k3 / target - 1.0, -0.2, 0.2)
  expected = 0.05 * (1.0 + error * run.ppo.rollout_batch_size / horizon)
  assert metrics["ppo/kl_coef"] == pytest.approx(expected, rel=1e-5)
  assert (metrics["ppo/kl_coef"] > 0.05) == (k3 > target)


def test_bf16_rollout_scored_in_the_training_layout(sft_and_rm, tmp_path):
  run = _run(tmp_path, "model.compute_dtype=bfloat16", "ppo.temperature=0.9",
             "ppo.rollout_batch_size=16", "ppo.num_minibatches=2")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run))
  # Random weights scaled up: a policy far from uniform and far from peaked, where bf16
  # rounding moves log-probs the most.
  policy = jax.tree_util.tree_map(lambda x: 3.0 * x if x.ndim > 1 else x, policy)
  state = init_ppo_state(run, config, policy)
  rm = setup.load_reward_model(sft_and_rm["rm"])
  rollout, experience, metrics = _experience(run, state, config, rm)
  # The sampler's bf16 KV-cache log-probs differ from a training forward pass (on XLA:CPU
  # by ~1e-6 inside jit, by ~1e-2 op by op; on accelerators bf16 matmuls differ more) ...
  live = np.asarray(rollout.response_mask) > 0
  gap = np.abs(np.asarray(rollout.sampler_logps) - np.asarray(experience.old_logps))[live]
  assert gap.max() > 0
  assert metrics["rollout/logprob_mismatch_max"] == pytest.approx(gap.max(), rel=1e-6)
  assert metrics["rollout/logprob_mismatch"] == pytest.approx(gap.mean(), rel=1e-4)
  # ... but nothing PPO reads comes from them: the KL to an identical reference is 0 and
  # the first minibatch's ratio is exactly 1.
  assert metrics["rollout/kl"] == 0.0 and metrics["objective/kl"] == 0.0
  _, history = ppo_update(config, run.ppo, state, experience, jax.random.PRNGKey(1))
  first = {k: float(v) for k, v in history[0].items()}
  assert first["ppo/ratio_mean"] == 1.0, first
  assert first["ppo/clip_fraction"] == 0.0, first
  # The update's forward is another XLA program (inside value_and_grad): its log-probs
  # agree with the recompute to float32 rounding (rms log-ratio < 5e-7), not bit for bit.
  assert first["ppo/approx_kl"] < 1e-13, first


def test_ema_reference_in_bf16_moves_by_rate_times_the_gap():
  config = tiny_gpt2(vocab_size=64).replace(param_dtype="bfloat16")
  ref = init_params(config, jax.random.PRNGKey(0))
  policy = init_params(config, jax.random.PRNGKey(1))
  rate = 1e-3
  new = ema_update(ema_reference(ref), policy, rate)
  naive = jax.tree_util.tree_map(lambda r, p: (1 - rate) * r + rate * p, ref, policy)
  for r, p, n, bad in zip(*(jax.tree_util.tree_leaves(t) for t in (ref, policy, new, naive))):
    r64, p64 = np.asarray(r, np.float64), np.asarray(p, np.float64)
    expected = rate * (p64 - r64)
    if not np.any(expected):
      continue
    relative = lambda moved: np.linalg.norm(moved - expected) / np.linalg.norm(expected)
    assert n.dtype == jnp.float32
    assert relative(np.asarray(n, np.float64) - r64) < 0.01
    assert relative(np.asarray(bad, np.float64) - r64) > 0.1  # what bf16 arithmetic gives


def test_ppo_ema_reference_is_kept_in_float32(sft_and_rm, tmp_path):
  run = _run(tmp_path, f"model.init_from={sft_and_rm['sft']}", "model.param_dtype=bfloat16",
             "ppo.ref_ema=0.001")
  config, policy = setup.load_policy(run, {})
  state = init_ppo_state(run, config, policy)
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params["policy"])} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.ref_params)} == {jnp.dtype(jnp.float32)}


def test_micro_batches_change_no_ppo_loss_metric_or_gradient(sft_and_rm, tmp_path):
  run = _run(tmp_path, f"model.init_from={sft_and_rm['sft']}", "optimizer.name=sgd",
             "optimizer.learning_rate=1.0", "optimizer.grad_clip=none", "ppo.temperature=0.9")
  config, policy = setup.load_policy(run, {})
  rm = setup.load_reward_model(sft_and_rm["rm"])
  state = init_ppo_state(run, config, policy)
  _, experience, _ = _experience(run, state, config, rm)
  results = []
  for micro_batches in (1, 4):
    fresh = init_ppo_state(run, config, setup.copy_tree(policy))
    results.append(ppo_minibatch_step(config, run.ppo, fresh, experience, micro_batches))
  (whole, metrics), (split, split_metrics) = results
  assert metrics.keys() == split_metrics.keys()
  for name in metrics:
    np.testing.assert_allclose(split_metrics[name], metrics[name], atol=1e-5, err_msg=name)
  for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(split.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


@pytest.mark.parametrize("setting, key", [("ppo.temperature=0", "ppo.temperature"),
                                          ("ppo.temperature=-1", "ppo.temperature"),
                                          ("ppo.kl_estimator=k2", "ppo.kl_estimator"),
                                          ("ppo.num_minibatches=3", "ppo.num_minibatches")])
def test_bad_ppo_settings_exit_2_before_any_work(tmp_path, setting, key):
  out = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", "ppo", "--no-progress",
       "--output-dir", str(out), "--set", setting], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert key in result.stderr and result.stderr.count("\n") == 1, result.stderr
  assert not out.exists()


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_top_k_top_p_rollout_is_scored_on_the_samplers_support(sft_and_rm, tmp_path,
                                                                compute_dtype):
  run = _run(tmp_path, f"model.compute_dtype={compute_dtype}", "ppo.temperature=0.9",
             "ppo.top_k=20", "ppo.top_p=0.9")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run))
  policy = jax.tree_util.tree_map(lambda x: 3.0 * x if x.ndim > 1 else x, policy)
  state = init_ppo_state(run, config, policy)
  rm = setup.load_reward_model(sft_and_rm["rm"])
  prompts = _prompts(run)
  rollout = sample_rollout(config, policy, prompts.tokens, prompts.attention_mask,
                           jax.random.PRNGKey(0), max_new_tokens=run.ppo.max_new_tokens,
                           temperature=0.9, eos_id=config.eos_token_id, top_k=20, top_p=0.9)
  live = np.asarray(rollout.response_mask) > 0
  assert np.asarray(rollout.kept_counts)[live].max() <= 20
  assert np.asarray(rollout.kept_counts)[live].min() < 20  # top-p cuts further
  experience, _, metrics = make_experience(config, rm[0], run.ppo, state.params,
                                           state.ref_params, rm[1], rollout,
                                           state.extras["kl_coef"])
  if compute_dtype == "float32":  # the trainer's truncated log-probs are the sampler's
    assert float(metrics["rollout/logprob_mismatch_max"]) < 1e-5, metrics
  # Scoring on the full support instead (what a trainer that ignores the truncation does)
  # is far from the sampler: the first ratio would not be 1.
  full = _sequence_logps(config, policy, rollout, 0.9)
  truncated = np.asarray((experience.old_logps * rollout.response_mask).sum(axis=1))
  assert np.max(np.abs(full - truncated)) > 0.05
  _, history = ppo_update(config, run.ppo, state, experience, jax.random.PRNGKey(1))
  first = {k: float(v) for k, v in history[0].items()}
  assert abs(first["ppo/ratio_mean"] - 1.0) < 1e-6, first
  assert first["ppo/clip_fraction"] == 0.0, first
