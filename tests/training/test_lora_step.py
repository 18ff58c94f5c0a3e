"""LoRA training steps: only the adapters get gradients and optimizer state, the base stays bit
for bit, the reference is the base with adapters off, and DPO with LoRA learns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign.models import LoraConfig, init_lora, init_params, merge_lora, tiny_llama
from jaxalign.training.objectives import PreferenceObjective, SFTObjective
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import LoraBound, make_train_step
from tests.training.pairs import random_pairs


def _setup(objective_of, lr=1e-2):
  config = tiny_llama(lora=LoraConfig(rank=4, alpha=8.0))
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = init_lora(config, jax.random.PRNGKey(1))
  tx = optax.adam(lr)
  state = TrainState.create(adapters, tx, 0, base_params=jax.tree_util.tree_map(jnp.copy, base))
  return config, base, state, make_train_step(objective_of(config))


def _dpo(config):
  spec = preference_loss("dpo", beta=0.1)
  return PreferenceObjective(config, spec.loss_term)


def test_only_adapters_train_and_the_base_is_unchanged():
  config, base, state, step = _setup(lambda c: SFTObjective(c))
  batch = random_pairs(0)
  batch = {"tokens": batch["chosen_tokens"], "attention_mask": batch["chosen_attention_mask"],
           "loss_mask": batch["chosen_loss_mask"]}
  adapter_shapes = sorted(x.shape for x in jax.tree_util.tree_leaves(state.params))
  first = None
  for _ in range(3):
    state, metrics = step(state, batch)
    first = float(metrics["loss"]) if first is None else first
  assert float(metrics["loss"]) < first
  for got, want in zip(jax.tree_util.tree_leaves(state.base_params),
                       jax.tree_util.tree_leaves(base)):
    np.testing.assert_array_equal(got, want)
  opt_shapes = sorted(x.shape for x in jax.tree_util.tree_leaves(state.opt_state) if x.ndim)
  assert opt_shapes == sorted(adapter_shapes * 2)  # adam's mu and nu, adapters only
  b_max = max(float(jnp.abs(x).max()) for p, x in
              jax.tree_util.tree_leaves_with_path(state.params) if p[-1].key == "b")
  assert b_max > 0.0


def test_dpo_with_lora_reference_is_the_base_and_learns():
  config, base, state, step = _setup(_dpo, lr=3e-3)
  batch = random_pairs(1)
  losses = []
  for _ in range(30):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert abs(losses[0] - np.log(2)) < 1e-5  # step 0: policy == reference (adapters are zero)
  assert losses[-1] < 0.5 * losses[0]
  # The same loss from the merged adapters as a plain model against the base as reference.
  bound = LoraBound(_dpo(config), state.base_params)
  lora_loss, _ = bound.loss(state.params, None, batch, bound.denominators(batch))
  objective = _dpo(config.replace(lora=None))
  merged = merge_lora(config, base, state.params)
  loss, _ = objective.loss(merged, base, batch, objective.denominators(batch))
  assert float(lora_loss) < losses[0] - 0.1
  np.testing.assert_allclose(float(lora_loss), float(loss), atol=1e-5)
