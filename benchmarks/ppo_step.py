"""One PPO iteration (rollout + update) on the GPT-2-style benchmark model: batch 16,
prompt 64, 128 new tokens, f32, split into sampling, scoring (reward model, reference,
values, GAE) and the update (2 epochs x 2 minibatches), with tokens/s for each.

Peer: TRL 1.16 (the version in the test extra) has no PPO trainer: ``trl.PPOTrainer`` was
removed from TRL before 1.0 and is not in ``trl.experimental`` either, so there is nothing
to run against on the same machine; the sampling half is compared with transformers'
``generate`` in benchmarks/sampler.py. Usage:

  .venv/bin/python -m benchmarks.ppo_step [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import build_peer_model, machine_load
from jaxalign.config import RunConfig, load_config
from jaxalign.models import load_pretrained
from jaxalign.training.ppo import make_experience, ppo_update
from jaxalign.training.ppo_run import init_ppo_state
from jaxalign.training.rollout import sample_rollout
from jaxalign.training.runs import reward_model_params
from jaxalign.training.setup import copy_tree

B, P, N = 16, 64, 128


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=3)
  args = parser.parse_args()
  print(f"jax {jax.__version__}, {os.cpu_count()} cores, load {machine_load():.2f} busy cores")
  _, path = build_peer_model("gpt2")
  config, policy = load_pretrained(path)
  config = config.replace(eos_token_id=None)  # every row generates the full budget
  run = load_config(RunConfig, None, ["task=ppo", f"ppo.rollout_batch_size={B}",
                                      f"ppo.max_new_tokens={N}", "ppo.epochs=2",
                                      "ppo.num_minibatches=2"])
  state = init_ppo_state(run, config, policy)
  rm = reward_model_params(config, copy_tree(policy), 0)  # the update donates the policy
  prompts = jax.random.randint(jax.random.key(2), (B, P), 0, config.vocab_size)
  mask = jnp.ones_like(prompts)

  def sample(state, key):
    return jax.block_until_ready(sample_rollout(
        config, state.params["policy"], prompts, mask, key, max_new_tokens=N, temperature=1.0,
        eos_id=-1))

  def score(state, rollout):
    return jax.block_until_ready(make_experience(
        config, config, run.ppo, state.params, state.ref_params, rm, rollout,
        state.extras["kl_coef"])[0])

  def update(state, experience, key):
    new_state, _ = ppo_update(config, run.ppo, state, experience, key)
    jax.block_until_ready(new_state.params)
    return new_state

  times = {"sample": [], "score": [], "update": []}
  for rep in range(args.reps + 1):  # the first repetition compiles
    key = jax.random.PRNGKey(rep)
    t0 = time.perf_counter()
    rollout = sample(state, key)
    t1 = time.perf_counter()
    experience = score(state, rollout)
    t2 = time.perf_counter()
    state = update(state, experience, key)
    t3 = time.perf_counter()
    if rep:
      for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
        times[name].append(dt)
  new_tokens, train_tokens = B * N, B * (P + N)
  print(f"PPO iteration, batch {B}, prompt {P}, {N} new tokens, f32, 8 layers x 512, "
        f"vocab 8192 (median of {args.reps}):")
  for name, values in times.items():
    median = float(np.median(values))
    tokens = new_tokens if name == "sample" else train_tokens * (
        run.ppo.epochs if name == "update" else 1)
    print(f"  {name:<7} {median:7.3f}s  ({tokens / median:8.0f} tokens/s; "
          f"min {min(values):.3f}, max {max(values):.3f})")
  total = sum(float(np.median(v)) for v in times.values())
  print(f"  total   {total:7.3f}s; sampling is {float(np.median(times['sample'])) / total:.0%} "
        f"of the iteration")
  print("peer: TRL 1.16 ships no PPO trainer (removed before TRL 1.0), so no ratio is printed")


if __name__ == "__main__":
  main()
