"""A step gives the same loss and params on 1 device, on data-parallel, FSDP and
tensor-parallel meshes, and with gradient accumulation (every loss, metric and gradient of every objective: each loss of
LOSS_NAMES, a weighted sum, SFT, reward models); same seed, same bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import weighted_sum
from jaxalign.models import ScalarHead, init_params, tiny_gpt2
from jaxalign.parallel import MeshConfig, make_mesh, shard_batch, shard_params
from jaxalign.training.forward import token_logprobs
from jaxalign.training.objectives import (PreferenceObjective, RewardModelObjective,
                                          SFTObjective)
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.preference_losses import LOSS_NAMES, preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_train_step
from tests.training.pairs import random_pairs

CONFIG = tiny_gpt2()
# Plain SGD: the update is the gradient itself, so "same params" means "same gradient".
# (Adam's first step divides g by |g| + eps: entries with |g| ~ eps turn float noise into
# 1e-5 differences, which says nothing about the gradient.)
SGD = OptimizerConfig(name="sgd", learning_rate=1.0, grad_clip=None)


def _state(optimizer=SGD, mesh=None):
  params, ref = init_params(CONFIG, jax.random.key(0)), init_params(CONFIG, jax.random.key(1))
  if mesh is not None:
    params, ref = shard_params(params, mesh), shard_params(ref, mesh)
  return TrainState.create(params, make_optimizer(optimizer), seed=0, ref_params=ref)


def _dpo():
  return PreferenceObjective(CONFIG, preference_loss("dpo", beta=0.1).loss_term)


def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_one_step_is_the_same_on_every_mesh():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  batch = random_pairs(0)
  single, metrics = make_train_step(_dpo())(_state(), batch)
  for mesh_config in (MeshConfig(data=8), MeshConfig(data=2, fsdp=4), MeshConfig(fsdp=8, data=1),
                      MeshConfig(data=2, fsdp=2, tensor=2), MeshConfig(data=1, tensor=8)):
    mesh = make_mesh(mesh_config)
    state = _state(mesh=mesh)
    assert any(len(x.sharding.device_set) == 8 for x in jax.tree_util.tree_leaves(state.params))
    if mesh_config.tensor > 1:  # Megatron's rules: column-parallel q, vocab-parallel embed
      attn = state.params["layers_0"]["attn"]
      assert "tensor" in str(attn["q_proj"]["kernel"].sharding.spec)
      assert "tensor" in str(state.params["embed"].sharding.spec)
    sharded, sharded_metrics = make_train_step(_dpo())(
        state, shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh))
    assert abs(float(sharded_metrics["loss"]) - float(metrics["loss"])) < 1e-5
    assert _max_diff(sharded.params, single.params) < 1e-5, mesh_config


OBJECTIVES = LOSS_NAMES + ("weighted_sum", "sft", "rm", "rm_centered")


def _objective(name):
  """The objective called ``name``: a loss of LOSS_NAMES, a weighted sum, SFT or an RM."""
  if name == "sft":
    return SFTObjective(CONFIG)
  if name in ("rm", "rm_centered"):
    coefficient = 0.01 if name == "rm_centered" else None
    return RewardModelObjective(CONFIG, center_rewards_coefficient=coefficient)
  if name == "weighted_sum":  # KTO's reference point must reach a term inside a sum
    loss_term = weighted_sum({"dpo": preference_loss("dpo").loss_term,
                              "kto": (0.5, preference_loss("kto").loss_term)})
    return PreferenceObjective(CONFIG, loss_term)
  spec = preference_loss(name)
  return PreferenceObjective(CONFIG, spec.loss_term, average_logps=spec.average_logps,
                             needs_reference=spec.needs_reference)


def _pairs(weighted: bool):
  """8 pairs, every row its own response lengths. Unweighted: rejected rows padded wider than
  chosen ones. Weighted: rows 1 and 5 (all of micro-batch 1 of 4) weigh 0, others 0.5 to 2,
  and a Llama-2 margin per pair."""
  if not weighted:
    rejected = random_pairs(7, T=32)
    return dict(random_pairs(1), **{k: v for k, v in rejected.items() if "rejected" in k})
  return dict(random_pairs(2), weights=WEIGHTS,
              margin=jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32))


WEIGHTS = jnp.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0, 1.0, 1.5], jnp.float32)


def _batch(name, weighted):
  batch = _pairs(weighted)
  if name != "sft":
    return batch
  loss_mask = batch["chosen_loss_mask"]
  if weighted:  # SFT has no weights: micro-batch 1 of 4 gets no response token at all
    loss_mask = loss_mask * (WEIGHTS > 0)[:, None].astype(loss_mask.dtype)
  return {"tokens": batch["chosen_tokens"], "attention_mask": batch["chosen_attention_mask"],
          "loss_mask": loss_mask}


def _objective_state(name):
  if name not in ("rm", "rm_centered"):
    return _state()
  backbone = {k: v for k, v in init_params(CONFIG, jax.random.key(0)).items() if k != "lm_head"}
  head = ScalarHead().init(jax.random.key(2), jnp.zeros((1, CONFIG.embed_dim)))["params"]
  params = {"backbone": backbone, "score": head}
  return TrainState.create(params, make_optimizer(SGD), seed=0)


# The fast subset covers the kinds of reduction: per-pair (dpo), batch statistics (kto's
# reference point), per-token (sft), per-pair scalar heads (rm_centered); `make test-all`
# runs every objective.
FAST_OBJECTIVES = ("dpo", "kto", "sft", "rm_centered")


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", [
    name if name in FAST_OBJECTIVES else pytest.param(name, marks=pytest.mark.slow)
    for name in OBJECTIVES])
def test_four_micro_batches_of_two_equal_one_batch_of_eight(name, weighted):
  obj, batch = _objective(name), _batch(name, weighted)
  whole, metrics = make_train_step(obj)(_objective_state(name), batch)
  split, split_metrics = make_train_step(obj, micro_batches=4)(_objective_state(name), batch)
  assert split_metrics.keys() == metrics.keys()
  for key in metrics:
    np.testing.assert_allclose(split_metrics[key], metrics[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
  assert _max_diff(whole.params, split.params) < 1e-5  # plain SGD, lr 1: the same gradient


def _summed_logps(params, tokens, attention, loss_mask):
  """Summed response log-probs, one independent forward pass per row, as float64 ``[B]``."""
  forward = jax.jit(lambda p, t, a: token_logprobs(CONFIG, p, t, a))
  return np.array([np.sum(np.asarray(forward(params, tokens[i:i + 1], attention[i:i + 1])[0],
                                     np.float64) * np.asarray(loss_mask[i]))
                   for i in range(tokens.shape[0])])


def _kto_numpy(params, ref, batch, beta=0.1):
  """z0 = max(0, sum_i w_i (r_w,i + r_l,i) / (2 W)), W = sum w; the loss and the metrics."""
  logps = {(model, side): _summed_logps(p, batch[f"{side}_tokens"],
                                        batch[f"{side}_attention_mask"],
                                        batch[f"{side}_loss_mask"])
           for model, p in (("policy", params), ("ref", ref))
           for side in ("chosen", "rejected")}
  w = np.asarray(batch["weights"], np.float64)
  W = max(w.sum(), 1.0)
  r_w = logps["policy", "chosen"] - logps["ref", "chosen"]
  r_l = logps["policy", "rejected"] - logps["ref", "rejected"]
  mean_ratio = np.sum(w * (r_w + r_l)) / (2 * W)
  z0 = max(mean_ratio, 0.0)
  sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
  loss = np.sum(w * (1 - sigmoid(beta * (r_w - z0))) + w * (1 - sigmoid(beta * (z0 - r_l))))
  return mean_ratio, {
      "loss": loss / (2 * W), "kl": z0,
      "logps/chosen": np.sum(w * logps["policy", "chosen"]) / W,
      "logps/rejected": np.sum(w * logps["policy", "rejected"]) / W,
      "rewards/chosen": beta * np.sum(w * r_w) / W,
      "rewards/rejected": beta * np.sum(w * r_l) / W,
      "rewards/margins": beta * np.sum(w * (r_w - r_l)) / W}


def test_kto_reference_point_and_metrics_are_global_weighted_means():
  batch = dict(random_pairs(3), weights=WEIGHTS)
  params, ref = init_params(CONFIG, jax.random.key(0)), init_params(CONFIG, jax.random.key(1))
  mean_ratio, expected = _kto_numpy(params, ref, batch)
  if mean_ratio < 0:  # the clamp would hide z0: take the model that is ahead as the policy
    params, ref = ref, params
    mean_ratio, expected = _kto_numpy(params, ref, batch)
  assert expected["kl"] > 0.1
  objective = PreferenceObjective(CONFIG, preference_loss("kto", beta=0.1).loss_term)
  for micro_batches in (1, 4):
    state = TrainState.create(params, make_optimizer(SGD), seed=0, ref_params=ref)
    step = make_train_step(objective, micro_batches=micro_batches, donate=False)
    _, metrics = step(state, batch)
    for key, value in expected.items():
      np.testing.assert_allclose(metrics[key], value, rtol=1e-4, atol=1e-4,
                                 err_msg=f"{key}, micro_batches={micro_batches}")


def test_same_seed_same_bits_different_data_different_result():
  adamw = OptimizerConfig(learning_rate=1e-3)
  step = make_train_step(_dpo(), donate=False)
  a, b = _state(adamw), _state(adamw)
  for seed in range(3):
    a, _ = step(a, random_pairs(seed))
    b, _ = step(b, random_pairs(seed))
  assert _max_diff(a.params, b.params) == 0.0
  c = _state(adamw)
  for seed in range(3):
    c, _ = step(c, random_pairs(seed + 10))
  assert _max_diff(a.params, c.params) > 0.0


def test_step_traces_once():
  step = make_train_step(_dpo())
  state = _state()
  for seed in range(3):
    state, _ = step(state, random_pairs(seed))
  assert step._cache_size() == 1
