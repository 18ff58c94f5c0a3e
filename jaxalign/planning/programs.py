"""The compiled programs of a run, each as an abstract ``lower()`` and what it holds.

One ``Program`` per program the run compiles and runs repeatedly: the train step of
``runs.run_training`` (``make_train_step`` of the run's objective), PPO's / GRPO's minibatch
step and experience pass, and the sampler of every online task (the rollout's ``generate``
at the run's prompt batch and ``max_new_tokens``). ``arguments`` are the memory categories
the program takes; the run's other long-lived arrays (``resident``) stay on the devices
while it runs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxalign.config import RunConfig
from jaxalign.parallel import replicated
from jaxalign.planning import abstract as A
from jaxalign.planning import batches as B


@dataclasses.dataclass
class Program:
  """``lower()`` gives the ``jax.stages.Lowered`` program; ``arguments`` names the resident
  categories it takes plus its own inputs (``inputs``: category -> abstract tree)."""

  name: str
  lower: Callable[[], Any]
  arguments: tuple[str, ...]
  inputs: dict[str, Any]


@dataclasses.dataclass
class RunPrograms:
  """The run's long-lived arrays by category (abstract, sharded) and its programs."""

  resident: dict[str, Any]
  programs: list[Program]
  notes: list[str]
  state: Any = None  # the abstract TrainState (tests compare it with the run's)


def state_categories(state, task: str) -> dict[str, Any]:
  """A ``TrainState`` split into the report's categories."""
  params = state.params
  out = {}
  if task == "ppo":
    out["params"], out["critic / value head"] = params["policy"], params["value"]
  elif task in ("grpo", "rloo"):
    out["params"] = params["policy"]
  else:
    out["params"] = params
  out["opt_state"] = state.opt_state
  if state.base_params is not None:
    out["frozen base (LoRA)"] = state.base_params
  if state.ref_params is not None:
    out["reference"] = state.ref_params
  extras = dict(state.extras or {})
  reward = {k: extras.pop(k) for k in ("rm_params", "rm_opt_state") if k in extras}
  if reward:
    out["reward model"] = reward
  out["other state"] = {"step": state.step, "rng": state.rng, "extras": extras}
  return out


LORA_BASE = "frozen base (LoRA)"


def _bound(state):
  """(policy params as the experience pass reads them, its reference): ``ppo_iteration`` /
  ``grpo_iteration``'s LoRA binding, the base standing in for a missing reference."""
  return state.bound_params(), state.reference()


def _key(mesh):
  return jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated(mesh))


def _sampler_program(sample, policy, rows: int, P: int, mesh) -> tuple[Program, Any]:
  """The sampler at ``rows`` prompts of ``P`` tokens; also its abstract output. ``policy``
  as the model reads it (``TrainState.policy``: LoRA binds the adapters to the base)."""
  tokens, mask = B.prompt_batch(rows, P, mesh)
  key = _key(mesh)
  jitted = jax.jit(sample)
  out = jax.eval_shape(sample, policy, tokens, mask, key)
  program = Program("sampler", lambda: jitted.lower(policy, tokens, mask, key),
                    ("params", LORA_BASE), {"prompts": (tokens, mask)})
  return program, out


def offline_programs(run: RunConfig, config, policy, mesh) -> RunPrograms:
  """sft / rm / dpo family / online-dpo: the train step (and online-dpo's sampler)."""
  from jaxalign.training.online_dpo import is_offline
  from jaxalign.training.runs import make_objective
  from jaxalign.training.step import make_train_step
  notes = []
  objective = make_objective(run, config, B.full_rows(run, config, run.task != "sft"))
  rm = None
  if run.task == "online-dpo" and run.online.reward_model:
    rm = A.abstract_reward_model(A.reward_model_config(run, config)[0], run.seed)
  state = jax.eval_shape(lambda p, r: A.offline_state(run, config, p, objective, r),
                         policy, rm)
  state = A.with_shardings(state, mesh)
  cached = A.needs_cached_reference(run, config, objective)
  if cached:
    notes.append("loss.reference=cached: the batch carries the reference log-probs (one "
                 "forward pass over the data before step 1, not planned here)")
  batch = B.on_batch_axes(B.offline_batch(run, config, mesh, cached), mesh)
  step = make_train_step(objective, micro_batches=run.loop.micro_batches,
                         state_shardings=A.shardings_of(state))
  resident = state_categories(state, run.task)
  programs = [Program("train step", lambda: step.lower(state, batch), tuple(resident),
                      {"batch": batch})]
  if run.task == "online-dpo" and not is_offline(run):
    spec = run.online
    rows = B.padded_rows(spec.prompts_per_refresh * spec.samples_per_prompt, mesh)
    sample = _online_dpo_sampler(run, config)
    programs.append(_sampler_program(sample, state.policy(None), rows,
                                     B.online_prompt_length(run, config, spec.max_new_tokens),
                                     mesh)[0])
  return RunPrograms(resident, programs, notes, state)


def _online_dpo_sampler(run: RunConfig, config):
  """``OnlineRefresher._sample``'s ``generate`` call."""
  from jaxalign.sampling import generate
  spec = run.online
  return lambda params, tokens, mask, key: generate(
      config, params, tokens, mask, key, max_new_tokens=spec.max_new_tokens,
      temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p,
      eos_id=config.eos_token_id)


def _rollout_sampler(config, spec, num_samples: int):
  """``online_loop.sample_iteration``'s ``sample_rollout`` call."""
  from jaxalign.training.rollout import sample_rollout
  return lambda params, tokens, mask, key: sample_rollout(
      config, params, tokens, mask, key, max_new_tokens=spec.max_new_tokens,
      temperature=spec.temperature, eos_id=config.eos_token_id, top_k=spec.top_k,
      top_p=spec.top_p, num_samples=num_samples)


def _reward_model(run: RunConfig, config, mesh, notes: list):
  rm_config, assumed = A.reward_model_config(run, config)
  if assumed:
    notes.append("online.reward_model is unset: the reward model is assumed to have the "
                 "policy's architecture")
  return rm_config, A.with_shardings(A.abstract_reward_model(rm_config, run.seed), mesh)


def ppo_programs(run: RunConfig, config, policy, mesh) -> RunPrograms:
  """PPO: the sampler, the experience pass (policy + value, reference, reward model) and
  the minibatch step."""
  from jaxalign.training import ppo
  spec, notes = run.ppo, []
  state = A.with_shardings(A.online_state(run, config, policy), mesh)
  rm_config, rm_params = _reward_model(run, config, mesh, notes)
  in_state = state_categories(state, "ppo")
  resident = dict(in_state, **{"reward model": rm_params})
  sampler, rollout = _sampler_program(
      _rollout_sampler(config, spec, 1), state.policy(), spec.rollout_batch_size,
      B.online_prompt_length(run, config, spec.max_new_tokens), mesh)
  rollout = B.on_batch_axes(rollout, mesh)
  kl = state.extras["kl_coef"]
  bound, ref = _bound(state)
  make = functools.partial(ppo.make_experience, config, rm_config, spec)
  experience = B.on_batch_axes(
      jax.eval_shape(make, bound, ref, rm_params, rollout, kl)[0], mesh)
  size = spec.rollout_batch_size // spec.num_minibatches
  key = _key(mesh)
  minibatch = B.on_batch_axes(jax.eval_shape(
      lambda e, k: ppo._minibatch(e, k, 0, 0, size), experience, key), mesh)
  return RunPrograms(resident, [
      sampler,
      Program("experience", lambda: ppo.make_experience.lower(
          config, rm_config, spec, bound, ref, rm_params, rollout, kl),
          ("params", "critic / value head", "reference", LORA_BASE, "reward model"),
          {"rollout": rollout}),
      Program("train step", lambda: ppo.ppo_minibatch_step.lower(
          config, spec, state, minibatch, run.loop.micro_batches), tuple(in_state),
          {"minibatch": minibatch})], notes, state)


def grpo_programs(run: RunConfig, config, policy, mesh) -> RunPrograms:
  """GRPO / RLOO: the sampler (group_size samples per prompt), the experience pass (policy,
  reference) and the minibatch step."""
  from jaxalign.training import grpo
  spec, notes = run.grpo, []
  state = A.with_shardings(A.online_state(run, config, policy), mesh)
  resident = state_categories(state, "grpo")
  in_state = tuple(resident)
  if run.online.reward_model:
    resident["reward model"] = _reward_model(run, config, mesh, notes)[1]
  sampler, rollout = _sampler_program(
      _rollout_sampler(config, spec, spec.group_size), state.policy(),
      spec.prompts_per_iteration, B.online_prompt_length(run, config, spec.max_new_tokens), mesh)
  rollout = B.on_batch_axes(rollout, mesh)
  rows = spec.prompts_per_iteration * spec.group_size
  rewards = B.on_batch_axes(jax.ShapeDtypeStruct((rows,), jnp.float32), mesh)
  bound, ref = _bound(state)
  make = functools.partial(grpo.make_group_experience, config, spec)
  experience = B.on_batch_axes(jax.eval_shape(make, bound, ref, rollout, rewards)[0], mesh)
  minibatch = experience
  if spec.num_minibatches > 1:
    size, key = rows // spec.num_minibatches, _key(mesh)
    minibatch = B.on_batch_axes(jax.eval_shape(
        lambda e, k: grpo._minibatch(e, k, 0, 0, size), experience, key), mesh)
  return RunPrograms(resident, [
      sampler,
      Program("experience", lambda: grpo.make_group_experience.lower(
          config, spec, bound, ref, rollout, rewards),
          ("params", "reference", LORA_BASE), {"rollout": rollout}),
      Program("train step", lambda: grpo.grpo_minibatch_step.lower(
          config, spec, state, minibatch, run.loop.micro_batches), in_state,
          {"minibatch": minibatch})], notes, state)


def run_programs(run: RunConfig, config, policy, mesh) -> RunPrograms:
  if run.task == "ppo":
    return ppo_programs(run, config, policy, mesh)
  if run.task in ("grpo", "rloo"):
    return grpo_programs(run, config, policy, mesh)
  return offline_programs(run, config, policy, mesh)
