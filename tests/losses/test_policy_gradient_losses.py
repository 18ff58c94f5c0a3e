"""``policy_gradient_loss``: hand values for every aggregation and variant, GSPO's gradient,
micro-batch and padding invariance, jit, float64 gradient checks, extremes and bf16.

TRL parity lives in test_trl_grpo_parity.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxalign.losses import policy_gradient_loss, term

# Two rows: a prompt column (mask 0), then 3 and 2 response tokens; padding holds garbage.
MASK = jnp.array([[0, 1, 1, 1], [0, 1, 1, 0]])
RATIOS = np.array([[1.0, 1.5, 0.5, 1.1], [1.0, 0.7, 1.25, 1.0]])
LOGPS = jnp.array([[9.0, -1.0, -2.0, -0.5], [9.0, -1.5, -0.25, 9.0]])
OLD_LOGPS = LOGPS - jnp.log(RATIOS)
ADVANTAGES = jnp.array([1.0, -2.0])  # per sequence
CLIP = dict(clip_low=0.2, clip_high=0.3)  # range [0.8, 1.3]
# Per-token losses (clip): row 0 (A = 1): -min(1.5, 1.3) = -1.3 (high clip), -min(0.5, 0.8) =
# -0.5, -1.1; row 1 (A = -2): 2 max(0.7, 0.8) = 1.6 (low clip), 2 max(1.25, 1.25) = 2.5.
# Sum 1.2 over N = 5 tokens, S = 2 sequences.
HAND = {
    "token_mean": 1.2 / 5,
    "sequence_mean": (-2.9 / 3 + 4.1 / 2) / 2,
    "constant": 1.2 / (2 * 4),  # max_new_tokens = 4
    "token_sum": 1.2 / 2,
}


def _loss(aggregation, **knobs):
  return policy_gradient_loss(LOGPS, OLD_LOGPS, ADVANTAGES, MASK, aggregation=aggregation,
                              max_new_tokens=4, **{**CLIP, **knobs})


@pytest.mark.parametrize("aggregation", list(HAND))
def test_aggregations_hand_values(aggregation):
  loss, metrics = _loss(aggregation)
  np.testing.assert_allclose(loss, HAND[aggregation], rtol=1e-6)
  np.testing.assert_allclose(metrics["policy_loss"], HAND[aggregation], rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_ratio/low_mean"], 1 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_ratio/high_mean"], 1 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_ratio/region_mean"], 2 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"], 5.05 / 5, rtol=1e-6)
  logs = np.log(RATIOS[np.asarray(MASK) == 1])
  np.testing.assert_allclose(metrics["approx_kl"], 0.5 * np.mean(logs ** 2), rtol=1e-5)


def test_token_mean_gradient():
  grad = jax.grad(lambda x: policy_gradient_loss(x, OLD_LOGPS, ADVANTAGES, MASK, **CLIP)[0])(LOGPS)
  # -A rho / N where the unclipped term is active, 0 where a clip binds or off the mask
  np.testing.assert_allclose(grad, [[0, 0, -0.5 / 5, -1.1 / 5], [0, 0, 2 * 1.25 / 5, 0]],
                             atol=1e-7)


def test_clip_higher_is_asymmetric():
  # a wider upper range un-clips the ratio 1.5 (A > 0): -1.5 instead of -1.3 in the sum
  loss, metrics = _loss("token_mean", clip_low=0.2, clip_high=0.6)
  np.testing.assert_allclose(loss, (1.2 - 0.2) / 5, rtol=1e-6)
  assert float(metrics["clip_ratio/high_mean"]) == 0.0
  np.testing.assert_allclose(metrics["clip_ratio/low_mean"], 1 / 5, rtol=1e-6)


def test_delta_bounds_the_unclipped_ratio_for_negative_advantages():
  logps = jnp.log(jnp.array([[3.0, 1.5]]))
  old, advantages, mask = jnp.zeros((1, 2)), jnp.array([-1.0]), jnp.ones((1, 2))
  f = lambda x, delta: policy_gradient_loss(x, old, advantages, mask, clip_low=0.2,
                                            clip_high=0.2, delta=delta)[0]
  # max(min(3, 2), 1.2) = 2 and max(1.5, 1.2) = 1.5; without delta (3 + 1.5) / 2
  np.testing.assert_allclose(f(logps, 2.0), 1.75, rtol=1e-6)
  np.testing.assert_allclose(f(logps, None), 2.25, rtol=1e-6)
  # the bound carries no gradient; the other token -A rho / 2
  np.testing.assert_allclose(jax.grad(f)(logps, 2.0), [[0.0, 0.75]], rtol=1e-6)


def test_cispo_hand_value_and_gradient():
  f = lambda x: policy_gradient_loss(x, OLD_LOGPS, ADVANTAGES, MASK, cispo=True, clip_high=0.3)
  (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(LOGPS)
  # w = min(rho, 1.3) = [1.3, 0.5, 1.1], [0.7, 1.25]; -w A logp: 1.3 + 1.0 + 0.55 - 2.1 - 0.625
  np.testing.assert_allclose(loss, 0.125 / 5, rtol=1e-5)
  np.testing.assert_allclose(metrics["cispo_clip_ratio"], 1 / 5, rtol=1e-6)
  assert "clip_ratio/low_mean" not in metrics
  # every token keeps the gradient -w A / N, the clipped one too (w stop-gradient)
  np.testing.assert_allclose(grad, [[0, -1.3 / 5, -0.5 / 5, -1.1 / 5], [0, 1.4 / 5, 2.5 / 5, 0]],
                             rtol=1e-6, atol=1e-7)
  # no lower bound: a ratio of 0.5 keeps its weight 0.5 whatever clip_low says
  np.testing.assert_allclose(f(LOGPS)[0], policy_gradient_loss(
      LOGPS, OLD_LOGPS, ADVANTAGES, MASK, cispo=True, clip_low=0.01, clip_high=0.3)[0])


def test_gspo_sequence_ratio_and_gradient():
  f = lambda x: policy_gradient_loss(x, OLD_LOGPS, ADVANTAGES, MASK,
                                     importance_level="sequence", aggregation="sequence_mean",
                                     **CLIP)
  (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(LOGPS)
  s0, s1 = (1.5 * 0.5 * 1.1) ** (1 / 3), math.sqrt(0.7 * 1.25)  # 0.9380, 0.9354: unclipped
  np.testing.assert_allclose(loss, (-s0 * 1.0 + s1 * 2.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"], (s0 + s1) / 2, rtol=1e-6)  # per sequence
  assert float(metrics["clip_ratio/region_mean"]) == 0.0
  # token t of row i: -A_i s_i / (n_i S), the gradient of mean_i(-A_i s_i)
  np.testing.assert_allclose(grad, [[0, *[-s0 / 6] * 3], [0, s1 / 2, s1 / 2, 0]], rtol=1e-6,
                             atol=1e-7)


def test_gspo_clip_removes_the_gradient_of_a_clipped_sequence():
  # row 1 (A = -2): s1 = 0.935 < 0.95: the lower clip binds, its tokens get no gradient;
  # row 0 (A = 1): s0 = 0.938 < 0.95 but A > 0: the unclipped term is active
  f = lambda x: policy_gradient_loss(x, OLD_LOGPS, ADVANTAGES, MASK, importance_level="sequence",
                                     clip_low=0.05, clip_high=0.05)
  (_, metrics), grad = jax.value_and_grad(f, has_aux=True)(LOGPS)
  np.testing.assert_allclose(grad[1], 0.0)
  assert np.abs(grad[0, 1:]).min() > 0
  np.testing.assert_allclose(metrics["clip_ratio/low_mean"], 0.5)  # one sequence of two


def test_kl_in_the_loss_and_entropy_bonus():
  logps, ref_logps = jnp.array([[-1.0, -2.0]]), jnp.array([[-1.5, -1.5]])
  entropies = jnp.array([[0.5, 1.5]])
  k3 = np.array([math.exp(-0.5) + 0.5 - 1, math.exp(0.5) - 0.5 - 1])  # 0.1065, 0.1487
  f = lambda x, e, weight=False: policy_gradient_loss(
      x, x, jnp.zeros(1), jnp.ones((1, 2)), ref_logps=ref_logps, kl_coef=0.1,
      kl_importance_weight=weight, entropies=e, entropy_coef=0.01)
  loss, metrics = f(logps, entropies)
  np.testing.assert_allclose(loss, 0.1 * k3.mean() - 0.01 * 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["kl"], k3.mean(), rtol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics["policy_loss"], 0.1 * k3.mean(), rtol=1e-6)
  # d k3 / d logp = 1 - exp(ref - logp); the ratio weight (value 1) adds k3 itself
  d = np.array([-0.5, 0.5])
  grad = jax.grad(lambda x: f(x, entropies)[0])(logps)
  np.testing.assert_allclose(grad, [0.1 * (1 - np.exp(d)) / 2], rtol=1e-5)
  grad = jax.grad(lambda x: f(x, entropies, True)[0])(logps)
  np.testing.assert_allclose(grad, [0.1 * (1 - np.exp(d) + k3) / 2], rtol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda e: f(logps, e)[0])(entropies), [[-0.005, -0.005]])
  # k1: logp - ref
  loss, _ = policy_gradient_loss(logps, logps, jnp.zeros(1), jnp.ones((1, 2)),
                                 ref_logps=ref_logps, kl_coef=1.0, kl_estimator="k1")
  np.testing.assert_allclose(loss, 0.0, atol=1e-7)  # (0.5 - 0.5) / 2


# ---- generic properties over a grid of variants ----------------------------------------------

B, T = 5, 6
VARIANTS = {
    "grpo": dict(aggregation="sequence_mean"),
    "dapo": dict(aggregation="token_mean", clip_high=0.28),
    "dr_grpo": dict(aggregation="constant", max_new_tokens=8),
    "token_sum": dict(aggregation="token_sum"),
    "delta": dict(aggregation="token_mean", delta=1.5),
    "cispo": dict(aggregation="token_mean", cispo=True, clip_high=0.5),
    "gspo": dict(aggregation="sequence_mean", importance_level="sequence", clip_low=0.05,
                 clip_high=0.05),
    "gspo_token_mean": dict(aggregation="token_mean", importance_level="sequence"),
    "gspo_cispo": dict(aggregation="token_mean", importance_level="sequence", cispo=True),
    "kl_entropy": dict(aggregation="token_mean", kl_coef=0.1, entropy_coef=0.01),
    "kl_weighted_k2": dict(aggregation="sequence_mean", kl_coef=0.1, kl_estimator="k2",
                           kl_importance_weight=True),
    "gspo_kl_weighted": dict(aggregation="constant", max_new_tokens=8,
                             importance_level="sequence", kl_coef=0.1,
                             kl_importance_weight=True),
}


def _inputs(dtype=jnp.float32, scale=1.0, token_advantages=False, seed=0):
  k = jax.random.split(jax.random.key(seed), 5)
  logps = -jnp.abs(jax.random.normal(k[0], (B, T), dtype)) * scale - 0.1
  noise = lambda key, s: jax.random.normal(key, (B, T), dtype) * s * max(scale, 1.0)
  shape = (B, T) if token_advantages else (B,)
  return {
      "logps": logps, "old_logps": logps + noise(k[1], 0.4), "ref_logps": logps + noise(k[2], 0.5),
      "entropies": jnp.abs(jax.random.normal(k[3], (B, T), dtype)) + 0.1,
      "advantages": jax.random.normal(k[4], shape, dtype),
      # rows of 6, 2, 4, 1 tokens and one empty row; prompt columns first
      "mask": jnp.array([[1] * 6, [0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1],
                         [0] * 6]),
  }


def _call(knobs, inputs, **extra):
  return policy_gradient_loss(inputs["logps"], inputs["old_logps"], inputs["advantages"],
                              inputs["mask"], ref_logps=inputs["ref_logps"],
                              entropies=inputs["entropies"], **knobs, **extra)


@pytest.mark.parametrize("token_advantages", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_micro_batches_add_up_with_global_denominators(name, token_advantages):
  knobs = VARIANTS[name]
  inputs = _inputs(token_advantages=token_advantages)
  counts = dict(denominator=inputs["mask"].sum(),
                sequence_denominator=(inputs["mask"].sum(1) > 0).sum())
  value_and_grad = lambda q, **extra: jax.value_and_grad(
      lambda x: _call(knobs, {**q, "logps": x}, **extra), has_aux=True)(q["logps"])
  (loss, metrics), grad = value_and_grad(inputs)
  total, total_metrics, grads = 0.0, {}, []
  for rows in (slice(0, 2), slice(2, 5)):
    (part, part_metrics), part_grad = value_and_grad(
        {k: v[rows] for k, v in inputs.items()}, **counts)
    total += part
    grads.append(part_grad)
    for key, value in part_metrics.items():
      total_metrics[key] = total_metrics.get(key, 0.0) + value
  np.testing.assert_allclose(total, loss, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(jnp.concatenate(grads), grad, rtol=1e-5, atol=1e-7)
  assert total_metrics.keys() == metrics.keys()
  for key in metrics:
    np.testing.assert_allclose(total_metrics[key], metrics[key], rtol=1e-5, atol=1e-7,
                               err_msg=key)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_padding_changes_nothing_even_inf_and_nan(name):
  knobs = VARIANTS[name]
  inputs = _inputs()
  f = lambda q: jax.value_and_grad(lambda x: _call(knobs, {**q, "logps": x}), has_aux=True)(
      q["logps"])
  (loss, metrics), grad = f(inputs)
  garbage = {"logps": jnp.inf, "old_logps": -jnp.inf, "ref_logps": jnp.nan, "entropies": jnp.nan}

  def pad(key, x):
    if key == "advantages":
      return jnp.concatenate([x, jnp.full((2,), 5.0)])  # two empty rows
    fill = 0 if key == "mask" else garbage[key]
    x = jnp.concatenate([x, jnp.full((B, 3), fill, x.dtype)], axis=1)  # three padded columns
    return jnp.concatenate([x, jnp.full((2, T + 3), fill, x.dtype)], axis=0)

  (padded_loss, padded_metrics), padded_grad = f({k: pad(k, v) for k, v in inputs.items()})
  np.testing.assert_allclose(padded_loss, loss, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(padded_grad[:B, :T], grad, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(padded_grad[B:]) == 0) and np.all(np.asarray(padded_grad[:, T:]) == 0)
  for key in metrics:
    np.testing.assert_allclose(padded_metrics[key], metrics[key], rtol=1e-6, atol=1e-7,
                               err_msg=key)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_jit_matches_eager_and_metrics_are_f32_scalars(name):
  knobs = VARIANTS[name]
  inputs = _inputs()
  eager_loss, eager_metrics = _call(knobs, inputs)
  loss, metrics = jax.jit(lambda q: _call(knobs, q))(inputs)
  np.testing.assert_allclose(loss, eager_loss, rtol=1e-5, atol=1e-7)
  assert loss.shape == () and loss.dtype == jnp.float32 and np.isfinite(loss)
  assert metrics.keys() == eager_metrics.keys()
  for value in metrics.values():
    assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_finite_with_gaps_of_1e3_and_in_bf16(name, dtype):
  knobs = VARIANTS[name]
  inputs = _inputs(dtype=dtype, scale=1e3)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda x, e: _call(knobs, {**inputs, "logps": x, "entropies": e}), argnums=(0, 1),
      has_aux=True))(inputs["logps"], inputs["entropies"])
  assert loss.dtype == jnp.float32 and np.isfinite(loss)
  for grad in grads:
    assert np.isfinite(np.asarray(grad, np.float32)).all()
  for value in metrics.values():
    assert value.dtype == jnp.float32 and np.isfinite(value)


# CISPO's weight is a stop-gradient by design (GSPO-token with per-token advantages too;
# the grid uses per-sequence ones): gradients not the derivative of the value, tested by hand.
GRAD_CHECKED = [name for name in VARIANTS if "cispo" not in name]


@pytest.mark.parametrize("name", GRAD_CHECKED)
def test_check_grads(name, x64):
  knobs = VARIANTS[name]
  inputs = _inputs(dtype=jnp.float64)
  f = jax.jit(lambda x, e: _call(knobs, {**inputs, "logps": x, "entropies": e})[0])
  check_grads(f, (inputs["logps"], inputs["entropies"]), order=1, modes=["rev"])


def test_term_binds_both_global_counts():
  inputs = _inputs()
  counts = {"mask_denominator": 100.0, "sequence_denominator": 10.0}
  for knobs, expected in ((dict(aggregation="token_mean"), "denominator"),
                          (dict(aggregation="sequence_mean"), "sequence_denominator")):
    loss, _ = term(policy_gradient_loss, **knobs)({**inputs, **counts})
    direct = _call(knobs, inputs, denominator=100.0, sequence_denominator=10.0)[0]
    np.testing.assert_allclose(loss, direct, rtol=1e-6)
    assert not np.allclose(loss, _call(knobs, inputs)[0])  # the global counts were used


def test_errors():
  inputs = _inputs()
  with pytest.raises(ValueError, match="aggregation"):
    _call(dict(aggregation="sum"), inputs)
  with pytest.raises(ValueError, match="importance_level"):
    _call(dict(importance_level="group"), inputs)
  with pytest.raises(ValueError, match="max_new_tokens"):
    _call(dict(aggregation="constant"), inputs)
  with pytest.raises(ValueError, match="kl_estimator"):
    _call(dict(kl_estimator="k4"), inputs)
  with pytest.raises(ValueError, match="ref_logps"):
    policy_gradient_loss(inputs["logps"], inputs["old_logps"], inputs["advantages"],
                         inputs["mask"], kl_coef=0.1)
  with pytest.raises(ValueError, match="entropies"):
    policy_gradient_loss(inputs["logps"], inputs["old_logps"], inputs["advantages"],
                         inputs["mask"], entropy_coef=0.1)
