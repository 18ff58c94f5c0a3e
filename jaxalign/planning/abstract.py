"""Abstract versions of what a run puts on its devices: the policy, the train state, the
reward model, as ``jax.ShapeDtypeStruct`` trees with the run's shardings. No weights are
read or allocated: a ``model.path`` contributes its ``config.json`` only, a jaxalign folder
its metadata (``read_model_meta``), and params come from ``jax.eval_shape(init_params)``.

The states are built by the run's own builders under ``jax.eval_shape``
(``ppo_run.init_ppo_state``, ``grpo_run.init_grpo_state``; ``offline_state`` for the runs of
``runs.run_training``), and placed by the param rule (``parallel.param_shardings``) over the
whole state: the run shards params with that rule and the optimizer state inherits it
(``tx.init`` of sharded params), the rest (scalars, the PRNG key) is small and replicated.
``tests/planning/test_abstract.py`` checks both against the real run's state.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxalign.config import RunConfig
from jaxalign.models import (TransformerConfig, config_from_hf, init_params,
                             read_model_meta)
from jaxalign.parallel import param_shardings
from jaxalign.training import setup


def _numerics(spec) -> dict:
  return dict(param_dtype=spec.param_dtype, dtype=spec.compute_dtype, remat=spec.remat,
              attention_impl=spec.attention_impl, scan_layers=spec.scan_layers,
              lora=spec.lora.config())


def policy_config(run: RunConfig) -> TransformerConfig:
  """The policy's config as ``setup.load_policy`` builds it, without reading any weights."""
  spec = run.model
  if spec.init_from:
    return read_model_meta(spec.init_from)[0].replace(**_numerics(spec))
  if spec.path:
    from jaxalign.models.hf_checkpoint import read_hf_config
    where = os.path.join(spec.path, "config.json")
    return config_from_hf(read_hf_config(spec.path), where=where, **_numerics(spec))
  return setup.model_config(run, setup.vocab_overrides(run))


def abstract_params(config: TransformerConfig):
  """The params ``init_params(config)`` would give, as ShapeDtypeStructs (no allocation)."""
  return jax.eval_shape(lambda key: init_params(config, key), jax.random.PRNGKey(0))


def reward_model_config(run: RunConfig, policy: TransformerConfig) -> tuple[TransformerConfig,
                                                                             bool]:
  """(config, assumed) of ``online.reward_model``: its recorded config, or, when the key is
  unset, a reward model of the policy's architecture (``assumed`` True)."""
  if run.online.reward_model:
    return read_model_meta(run.online.reward_model)[0], False
  return policy.replace(lora=None), True


def abstract_reward_model(config: TransformerConfig, seed: int = 0):
  """A reward model's params (backbone + score head, ``runs.reward_model_params``)."""
  from jaxalign.training.runs import reward_model_params
  policy = abstract_params(config)
  return jax.eval_shape(lambda p: reward_model_params(config, p, seed), policy)


def _planning_run(run: RunConfig) -> RunConfig:
  """``run`` with ``model.reference_from`` unset: the reference is then a copy of the policy,
  which has the same shapes (``setup.check_same_layout``) and dtype (both are cast to
  ``model.param_dtype``), and no weights are read."""
  return dataclasses.replace(run, model=dataclasses.replace(run.model, reference_from=None))


def offline_state(run: RunConfig, config: TransformerConfig, policy, objective, rm_params=None):
  """The ``TrainState`` of ``runs.run_training`` (sft, rm, dpo family, online-dpo), unsharded,
  from the run's own builder (``runs.initial_state``) with the reference a copy of the policy
  (``_planning_run``: same shapes and dtype, no weights read). Call under ``eval_shape``."""
  from jaxalign.training.runs import initial_state
  return initial_state(_planning_run(run), config, policy, objective,
                       reference=lambda: setup.copy_tree(policy), rm_params=rm_params)[0]


def needs_cached_reference(run: RunConfig, config: TransformerConfig, objective) -> bool:
  """Whether the run's batches carry cached reference log-probs (``runs.run_training``)."""
  from jaxalign.training.runs import uses_cached_reference
  return uses_cached_reference(run, objective)


def online_state(run: RunConfig, config: TransformerConfig, policy):
  """PPO's / GRPO's ``TrainState`` from their own builders (``init_*_state``), unsharded."""
  run = _planning_run(run)
  if run.task == "ppo":
    from jaxalign.training.ppo_run import init_ppo_state
    return jax.eval_shape(lambda p: init_ppo_state(run, config, p), policy)
  from jaxalign.training.grpo_run import init_grpo_state
  return jax.eval_shape(lambda p: init_grpo_state(run, config, p), policy)


def with_shardings(tree, mesh):
  """ShapeDtypeStructs of ``tree`` placed by the param rule (what ``shard_params`` +
  ``on_mesh`` give the run: small leaves replicated)."""
  shardings = param_shardings(tree, mesh)
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def shardings_of(tree):
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


def device_bytes(tree) -> int:
  """Bytes one device holds of ``tree`` (ShapeDtypeStructs with NamedShardings): the size of
  each leaf's largest shard (``sharding.shard_shape``), summed."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shape = leaf.shape
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
      shape = sharding.shard_shape(shape)
    count = 1
    for size in shape:
      count *= int(size)
    total += count * jnp.dtype(leaf.dtype).itemsize
  return total
