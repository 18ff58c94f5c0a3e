"""``jaxalign train grpo`` / ``rloo``: critic-free RL on the shared online driver
(``online_loop.run_online``: checkpoints, exact resume, NaN guard, signals, mesh,
multi-host prompt shards, logging).

Each iteration: ``grpo.prompts_per_iteration`` prompts, ``grpo.group_size`` samples each from
one prefill, rewards (``grpo_rewards``), group advantages, optional filters (zero-variance
groups, truncated samples), then ``grpo.num_iterations x grpo.num_minibatches`` clipped
policy-gradient steps, then the EMA reference. ``rloo`` is the same trainer with
``grpo.advantage=rloo``. On the verifiable task the held-out ``eval/pass@1`` (greedy) and
``eval/pass@k`` are measured every ``loop.eval_every`` iterations and at the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.config import RunConfig
from jaxalign.parallel import on_mesh, shard_global_batch, shard_params, to_host
from jaxalign.rewards import evaluate_pass
from jaxalign.training import online_loop, setup
from jaxalign.training.grpo import grpo_update, make_group_experience, uses_reference
from jaxalign.training.grpo_rewards import build_reward, rollout_rewards
from jaxalign.training.metrics_log import to_floats
from jaxalign.training.online_loop import OnlineAlgorithm
from jaxalign.training.optim import make_optimizer
from jaxalign.training.ppo import ema_reference, ema_update
from jaxalign.training.lora_folders import base_is_reference, init_adapters
from jaxalign.training.state import TrainState


def init_grpo_state(run: RunConfig, config, policy, mesh=None) -> TrainState:
  """Policy params (no value model), optimizer, the reference when the KL is on
  (``model.reference_from`` or a copy of the start policy; float32 for an EMA). LoRA
  (``config.lora``): ``params = {"policy": adapters}`` over ``base_params``, the start
  policy, which is also the reference unless ``model.reference_from`` is set (no copy)."""
  spec = run.grpo
  reference = base = None
  lora = config.lora is not None
  if uses_reference(spec) and not base_is_reference(run, config):
    reference = setup.load_reference(run, policy)
    if spec.ref_ema:
      reference = ema_reference(reference)
  if lora:
    base, policy = policy, init_adapters(run, config)
  params = {"policy": policy}
  if mesh is not None:
    params = shard_params(params, mesh)
    reference = None if reference is None else shard_params(reference, mesh)
    base = None if base is None else shard_params(base, mesh)
  state = TrainState.create(params, make_optimizer(run.optimizer), run.seed,
                            ref_params=reference, extras={"iteration": jnp.int32(0)},
                            base_params=base)
  return state if mesh is None else on_mesh(state, mesh)


def _prepare(run: RunConfig, config, mesh) -> dict:
  spec = run.grpo
  context = {"reward": build_reward(run, spec.max_new_tokens, mesh)}
  if run.data.source == "verifiable":
    context["eval_rows"] = setup.build_prompt_rows(run, "eval", spec.max_new_tokens)[0]
  return context


def grpo_iteration(run: RunConfig, config, context, state: TrainState, prompts, mesh=None):
  """One rollout of G samples per prompt and its updates: (state, metrics of floats)."""
  spec = run.grpo
  iteration, rng, rollout = online_loop.sample_iteration(config, spec, state, prompts, mesh,
                                                         num_samples=spec.group_size)
  scored = rollout_rewards(context["reward"], prompts, rollout, group_size=spec.group_size,
                           eos_id=config.eos_token_id, max_new_tokens=spec.max_new_tokens,
                           mesh=mesh)
  rewards = scored.total
  if mesh is not None:
    rewards = shard_global_batch(rewards, mesh)
  bound = state.bound_params()
  ref = state.reference()
  experience, metrics = make_group_experience(config, spec, bound, ref, rollout, rewards)
  metrics = dict(to_floats(to_host(metrics)), **scored.metrics("rollout/rewards/"))
  state, history = grpo_update(config, spec, state, experience,
                               np.asarray(jax.random.fold_in(rng, 1)),
                               micro_batches=run.loop.micro_batches)
  metrics, history = online_loop.mean_history(metrics, history)
  metrics["grpo/first_step_ratio_mean"] = history[0]["grpo/ratio_mean"]
  metrics["rollout/samples"] = float(rollout.sequence.shape[0])
  ref = state.ref_params
  if ref is not None and spec.ref_ema:
    ref = ema_update(ref, state.params["policy"], spec.ref_ema)
  state = state.replace(ref_params=ref, extras={"iteration": jnp.int32(iteration + 1)})
  return (state if mesh is None else on_mesh(state, mesh)), metrics


def _evaluate(run: RunConfig, config, context, state) -> dict:
  """Held-out pass@1 (greedy) and pass@k on the verifiable task; {} elsewhere."""
  if "eval_rows" not in context:
    return {}
  spec = run.grpo
  params = to_host(state.policy())
  return evaluate_pass(config, params, context["eval_rows"], jax.random.PRNGKey(run.seed + 1),
                       k=spec.group_size, temperature=spec.temperature,
                       max_new_tokens=spec.max_new_tokens, eos_id=config.eos_token_id)


def _update_batches(run: RunConfig) -> list[tuple[str, int]]:
  spec = run.grpo
  rows = spec.prompts_per_iteration * spec.group_size
  return [("grpo.prompts_per_iteration", spec.prompts_per_iteration),
          ("a minibatch (prompts_per_iteration x group_size / num_minibatches)",
           rows // spec.num_minibatches)]


GRPO = OnlineAlgorithm(
    name="grpo", prompts_per_iteration=lambda run: run.grpo.prompts_per_iteration,
    max_new_tokens=lambda run: run.grpo.max_new_tokens, update_batches=_update_batches,
    prepare=_prepare, init_state=init_grpo_state,
    iteration=grpo_iteration, evaluate=_evaluate)


def run_grpo(run: RunConfig, progress: bool = True, on_existing: str = "auto") -> dict:
  """The GRPO / RLOO / REINFORCE++ run (``online_loop.run_online``)."""
  return online_loop.run_online(run, GRPO, progress, on_existing)
