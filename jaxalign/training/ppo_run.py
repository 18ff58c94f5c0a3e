"""``run_ppo(config)``: the PPO loop from the command line, with checkpoints and logging.

Each iteration: sample ``ppo.rollout_batch_size`` prompts, roll out with the compiled sampler
on the current policy, score with the reward model, compute advantages, run
``ppo.epochs x ppo.num_minibatches`` updates, update the KL coefficient and the (EMA)
reference. A checkpoint after an iteration holds everything the next one reads, so a killed
run resumes bit-identically.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.checkpoint import Checkpointer
from jaxalign.config import RunConfig, save_config
from jaxalign.models import ScalarHead, save_model
from jaxalign.parallel import initialize_distributed, is_main_process, to_host
from jaxalign.training import setup
from jaxalign.training.metrics_log import MetricsLogger, to_floats
from jaxalign.training.optim import make_optimizer
from jaxalign.training.ppo import (explained_variance, kl_controller, make_experience,
                                   ema_update, ppo_update)
from jaxalign.training.rollout import sample_rollout
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


def init_ppo_state(run: RunConfig, config, policy) -> TrainState:
  spec = run.ppo
  params = {"policy": policy,
            "value": init_value_params(config, policy, spec.shared_value_head, run.seed)}
  return TrainState.create(params, make_optimizer(run.optimizer), run.seed,
                           ref_params=setup.copy_tree(policy),
                           extras={"kl_coef": jnp.float32(spec.kl_coef),
                                   "iteration": jnp.int32(0)})


def ppo_iteration(run: RunConfig, config, rm, state: TrainState, prompts, gold_reward=None):
  """One rollout + update. Returns (state, metrics dict of floats)."""
  spec = run.ppo
  rm_config, rm_params = rm
  iteration = int(state.extras["iteration"])
  rng = jax.random.fold_in(state.rng, iteration)
  rollout = sample_rollout(config, state.params["policy"], prompts.tokens, prompts.attention_mask,
                           jax.random.fold_in(rng, 0), max_new_tokens=spec.max_new_tokens,
                           temperature=spec.temperature, eos_id=config.eos_token_id)
  experience, _, metrics = make_experience(config, rm_config, spec, state.params,
                                           state.ref_params, rm_params, rollout,
                                           state.extras["kl_coef"])
  metrics = to_floats(metrics)
  if gold_reward is not None:
    P = rollout.prompt_tokens.shape[1]
    metrics["rollout/gold_reward"] = float(jnp.mean(gold_reward(
        rollout.prompt_tokens, rollout.sequence[:, P:], rollout.response_mask,
        rollout.prompt_mask)))
  state, history = ppo_update(config, spec, state, experience, jax.random.fold_in(rng, 1))
  history = [to_floats(h) for h in history]
  for name in history[0]:
    metrics[name] = float(np.mean([h[name] for h in history]))
  metrics["ppo/first_minibatch_clip_fraction"] = history[0]["ppo/clip_fraction"]
  metrics["ppo/explained_variance"] = float(explained_variance(
      experience.old_values, experience.returns, experience.response_mask))
  controller = kl_controller(spec, state.extras["kl_coef"]).update(
      metrics["rollout/kl"], prompts.tokens.shape[0])
  metrics["ppo/kl_coef"] = float(controller.value)
  state = state.replace(
      ref_params=ema_update(state.ref_params, state.params["policy"], spec.ref_ema),
      extras={"kl_coef": jnp.float32(controller.value), "iteration": jnp.int32(iteration + 1)})
  return state, metrics


def run_ppo(run: RunConfig, progress: bool = True) -> dict:
  initialize_distributed()
  main = is_main_process()
  if main:
    save_config(run, os.path.join(run.output_dir, "config.yaml"))
  spec = run.ppo
  rows, report = setup.build_prompt_rows(run, "train", spec.max_new_tokens)
  if main:
    print(f"prompts: {report.summary() if report.num_rows else len(rows)}")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run))
  rm = setup.load_reward_model(run.online.reward_model)
  state = init_ppo_state(run, config, policy)
  prompts = D.BatchIterator(rows, spec.rollout_batch_size, seed=run.seed,
                            buckets=(rows.max_length,))
  gold = setup.synthetic_task(run).gold_reward if run.data.source == "synthetic" else None
  checkpointer = None
  if run.loop.checkpoint_every:
    checkpointer = Checkpointer(os.path.join(run.output_dir, "checkpoints"),
                                save_every=run.loop.checkpoint_every,
                                keep=run.loop.keep_checkpoints)
    if checkpointer.latest_step() is not None:
      state, data_state = checkpointer.restore(state)
      prompts.set_state(data_state)
      if main:
        print(f"resumed from step {int(state.extras['iteration'])}")
  start = int(state.extras["iteration"])
  logger = MetricsLogger(run.output_dir, run.loop.steps, start, progress=progress,
                         description="ppo")
  metrics = {}
  try:
    for iteration in range(start, run.loop.steps):
      state, metrics = ppo_iteration(run, config, rm, state, next(prompts), gold)
      if iteration + 1 == run.loop.steps or (iteration + 1) % run.loop.log_every == 0:
        logger.log(iteration + 1, metrics)
      if checkpointer:
        checkpointer.save(iteration + 1, state, prompts.get_state(),
                          force=iteration + 1 == run.loop.steps)
      logger.advance()
  finally:
    logger.close()
    if checkpointer:
      checkpointer.close()
  policy_params = to_host(state.params["policy"])  # every process joins the gather
  if main:
    save_model(os.path.join(run.output_dir, "model"), config, policy_params)
    with open(os.path.join(run.output_dir, "eval.json"), "w") as f:
      json.dump(metrics, f, indent=2)
  return metrics
