"""``run_ppo(config)``: PPO from the command line, on the shared online driver
(``online_loop.run_online``: checkpoints, resume, NaN guard, signals, logging, mesh).

Each iteration: sample ``ppo.rollout_batch_size`` prompts, roll out with the compiled sampler
on the current policy, score with the reward model, compute advantages, run
``ppo.epochs x ppo.num_minibatches`` updates, update the KL coefficient and the (EMA)
reference. A checkpoint after an iteration holds everything the next one reads, so a killed
run resumes bit-identically.

Multi-host: each process draws its own slice of every global prompt batch and the rollout
is one global array; host values (metrics, the gold reward) are gathered with ``to_host``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.models import ScalarHead
from jaxalign.parallel import on_mesh, shard_params, to_host
from jaxalign.training import online_loop, setup
from jaxalign.training.metrics_log import to_floats
from jaxalign.training.online_loop import OnlineAlgorithm
from jaxalign.training.optim import make_optimizer
from jaxalign.training.ppo import (ema_reference, ema_update, kl_controller, make_experience,
                                   ppo_update)
from jaxalign.training.lora_folders import base_is_reference, init_adapters
from jaxalign.training.state import TrainState


def init_value_params(config, policy_params, shared: bool, seed: int) -> dict:
  """A zero-initialised value head on the policy backbone, or a separate critic that starts
  from a copy of the policy's backbone."""
  head = ScalarHead(zero_init=True).init(jax.random.PRNGKey(seed),
                                         jnp.zeros((1, config.embed_dim)))["params"]
  if shared:
    return {"head": head}
  backbone = {k: v for k, v in setup.copy_tree(policy_params).items() if k != "lm_head"}
  return {"backbone": backbone, "score": head}


def init_ppo_state(run: RunConfig, config, policy, mesh=None) -> TrainState:
  """Policy + value params, optimizer, the reference (``model.reference_from`` or a copy of
  the start policy; float32 when it is an EMA), the KL coefficient and the iteration. LoRA
  (``config.lora``): the policy entry holds adapters over ``base_params`` (the start policy,
  also the reference unless ``model.reference_from`` is set); the value params train fully."""
  spec = run.ppo
  lora = config.lora is not None
  reference = base = None
  if not base_is_reference(run, config):
    reference = setup.load_reference(run, policy)
    if spec.ref_ema:
      reference = ema_reference(reference)
  value = init_value_params(config, policy, spec.shared_value_head, run.seed)
  if lora:
    base, policy = policy, init_adapters(run, config)
  params = {"policy": policy, "value": value}
  if mesh is not None:
    params = shard_params(params, mesh)
    reference = None if reference is None else shard_params(reference, mesh)
    base = None if base is None else shard_params(base, mesh)
  state = TrainState.create(params, make_optimizer(run.optimizer), run.seed,
                            ref_params=reference,
                            extras={"kl_coef": jnp.float32(spec.kl_coef),
                                    "iteration": jnp.int32(0)}, base_params=base)
  return state if mesh is None else on_mesh(state, mesh)


def _gold_reward(gold_reward, rollout) -> float:
  """The gold reward of a rollout, on host values every process holds (a gather)."""
  P = rollout.prompt_tokens.shape[1]
  prompt, prompt_mask, sequence, mask = to_host((rollout.prompt_tokens, rollout.prompt_mask,
                                                 rollout.sequence, rollout.response_mask))
  return float(np.mean(gold_reward(prompt, sequence[:, P:], mask, prompt_mask)))


def ppo_iteration(run: RunConfig, config, rm, state: TrainState, prompts, gold_reward=None,
                  mesh=None):
  """One rollout + update. ``prompts`` is this process's slice of the global prompt batch
  (the whole batch on one process). Returns (state, metrics dict of floats)."""
  spec = run.ppo
  rm_config, rm_params = rm
  iteration, rng, rollout = online_loop.sample_iteration(config, spec, state, prompts, mesh)
  bound = state.bound_params()
  ref = state.reference()
  experience, _, metrics = make_experience(config, rm_config, spec, bound, ref, rm_params,
                                           rollout, state.extras["kl_coef"])
  metrics = to_floats(to_host(metrics))
  if gold_reward is not None:
    metrics["rollout/gold_reward"] = _gold_reward(gold_reward, rollout)
  state, history = ppo_update(config, spec, state, experience,
                              np.asarray(jax.random.fold_in(rng, 1)),
                              micro_batches=run.loop.micro_batches)
  metrics, history = online_loop.mean_history(metrics, history)
  metrics["ppo/first_minibatch_clip_fraction"] = history[0]["ppo/clip_fraction"]
  metrics["ppo/first_minibatch_ratio_mean"] = history[0]["ppo/ratio_mean"]
  # The controller reads the KL of the estimator the penalty uses (objective/kl).
  controller = kl_controller(spec, float(to_host(state.extras["kl_coef"]))).update(
      metrics["objective/kl"], spec.rollout_batch_size)
  metrics["ppo/kl_coef"] = float(controller.value)
  state = state.replace(
      ref_params=ema_update(state.ref_params, state.params["policy"], spec.ref_ema),
      extras={"kl_coef": jnp.float32(controller.value), "iteration": jnp.int32(iteration + 1)})
  return (state if mesh is None else on_mesh(state, mesh)), metrics


def _prepare(run: RunConfig, config, mesh) -> dict:
  """The reward model (on the mesh) and, on the synthetic task, the gold reward."""
  rm_config, rm_params = setup.load_reward_model(run.online.reward_model)
  gold = setup.synthetic_task(run).gold_reward if run.data.source == "synthetic" else None
  return {"rm": (rm_config, shard_params(rm_params, mesh)), "gold": gold}


def _update_batches(run: RunConfig) -> list[tuple[str, int]]:
  spec = run.ppo
  return [("ppo.rollout_batch_size", spec.rollout_batch_size),
          ("a minibatch (ppo.rollout_batch_size / ppo.num_minibatches)",
           spec.rollout_batch_size // spec.num_minibatches)]


PPO = OnlineAlgorithm(
    name="ppo", prompts_per_iteration=lambda run: run.ppo.rollout_batch_size,
    max_new_tokens=lambda run: run.ppo.max_new_tokens, update_batches=_update_batches,
    prepare=_prepare, init_state=init_ppo_state,
    iteration=lambda run, config, context, state, prompts, mesh: ppo_iteration(
        run, config, context["rm"], state, prompts, context["gold"], mesh))


def prompt_iterator(run: RunConfig, rows) -> D.BatchIterator:
  """PPO's prompt batches (``online_loop.prompt_iterator`` at ``ppo.rollout_batch_size``)."""
  return online_loop.prompt_iterator(run, rows, run.ppo.rollout_batch_size)


def run_ppo(run: RunConfig, progress: bool = True, on_existing: str = "auto") -> dict:
  """The PPO run (``online_loop.run_online``)."""
  return online_loop.run_online(run, PPO, progress, on_existing)
