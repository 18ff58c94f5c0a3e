"""Online / iterative DPO: the DPO-family trainer whose pairs are refreshed from the policy.

Every ``online.refresh_every`` policy steps: update the reference (fixed, the previous
iterate, or an EMA), optionally retrain the reward model on gold-labelled current samples
(every ``online.rm_refresh_every`` refreshes: the discriminator cadence of the GAN view),
sample k responses per prompt from the current policy, label them (reward model, gold
reward, or the policy's own implicit reward), form pairs (best vs worst, or all pairs) and
train on them with any loss of the DPO family. ``refresh_every = inf`` never refreshes: the
run is the offline DPO trainer, step for step.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.ops import masked_sum
from jaxalign.sampling import generate
from jaxalign.training.forward import reward_scores
from jaxalign.training.objectives import RewardModelObjective
from jaxalign.training.setup import batch_arrays
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.rollout import response_logps


def is_offline(run: RunConfig) -> bool:
  return math.isinf(run.online.refresh_every)


def check_online_config(run: RunConfig) -> None:
  online = run.online
  if online.samples_per_prompt < 2:
    raise ValueError(f"online.samples_per_prompt must be >= 2, got {online.samples_per_prompt}")
  if is_offline(run):
    return
  every = online.refresh_every
  if every < 1 or every != int(every):
    raise ValueError(f"online.refresh_every must be a positive integer or inf, got {every}")
  if run.loop.checkpoint_every and run.loop.checkpoint_every % int(every):
    raise ValueError(f"loop.checkpoint_every={run.loop.checkpoint_every} must be a multiple of "
                     f"online.refresh_every={int(every)} (a resumed run regenerates its pairs "
                     f"at the checkpointed refresh)")
  if online.labeller == "reward_model" and not online.reward_model:
    raise ValueError("online.labeller=reward_model needs online.reward_model")
  if online.rm_refresh_every and not online.reward_model:
    raise ValueError("online.rm_refresh_every > 0 retrains online.reward_model: set it")


class SwappableBatches:
  """An iterator whose underlying batch iterator the refresher replaces."""

  def __init__(self, batches=None):
    self.batches = batches

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.batches)

  def get_state(self):
    return self.batches.get_state() if self.batches is not None else None


def _pair_indices(scores: np.ndarray, mode: str):
  """(chosen, rejected) response indices among one prompt's k samples; ties never pair."""
  if mode == "best_worst":
    best, worst = int(np.argmax(scores)), int(np.argmin(scores))
    return [(best, worst)] if scores[best] > scores[worst] else []
  return [(i, j) if scores[i] > scores[j] else (j, i)
          for i, j in itertools.combinations(range(len(scores)), 2) if scores[i] != scores[j]]


class OnlineRefresher:
  """The ``before_step`` hook of ``fit`` that keeps the pairs on-policy."""

  def __init__(self, run: RunConfig, config, objective, prompt_rows, batches: SwappableBatches,
               make_rows, rm=None, gold_reward=None):
    self.run, self.config, self.objective = run, config, objective
    self.prompt_rows, self.batches, self.make_rows = prompt_rows, batches, make_rows
    self.rm_config = rm[0] if rm else None
    self.gold_reward = gold_reward
    self.every = int(run.online.refresh_every)
    self.rm_tx = make_optimizer(OptimizerConfig(learning_rate=1e-3))
    self.rm_step = _rm_step(self.rm_config, self.rm_tx) if rm else None

  def __call__(self, state, step: int):
    if step % self.every:
      return state, {}
    online = self.run.online
    iteration = step // self.every
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, step), 7)
    if iteration > 0:
      state = self._update_reference(state)
      if online.rm_refresh_every and iteration % online.rm_refresh_every == 0:
        state = self._refresh_reward_model(state, jax.random.fold_in(rng, 1))
    prompts, tokens, masks = self._sample(state.params, jax.random.fold_in(rng, 2),
                                          online.prompts_per_refresh)
    scores = self._label(state, prompts, tokens, masks)
    rows, metrics = self._pairs(prompts, tokens, masks, scores)
    self.batches.batches = D.BatchIterator(self.make_rows(rows, state), self.run.data.batch_size,
                                           seed=self.run.seed + step)
    if self.gold_reward is not None:
      metrics["online/gold_reward"] = float(np.mean(self._gold(prompts, tokens, masks)))
    metrics["online/iteration"] = float(iteration)
    return state, metrics

  def _update_reference(self, state):
    mode = self.run.online.reference
    if mode == "previous_iterate":
      return state.replace(ref_params=jax.tree_util.tree_map(jnp.copy, state.params))
    if mode == "ema":
      a = self.run.online.reference_ema
      return state.replace(ref_params=jax.tree_util.tree_map(
          lambda r, p: (1 - a) * r + a * p, state.ref_params, state.params))
    return state

  def _sample(self, params, rng, num_prompts: int):
    """k responses for each of ``num_prompts`` prompts: (prompt batch, tokens, masks)."""
    k = self.run.online.samples_per_prompt
    order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, 0), len(self.prompt_rows)))
    prompts = self.prompt_rows.batch(order[:num_prompts], self.prompt_rows.max_length)
    tokens = np.repeat(prompts.tokens, k, axis=0)
    mask = np.repeat(prompts.attention_mask, k, axis=0)
    out = generate(self.config, params, tokens, mask, jax.random.fold_in(rng, 1),
                   max_new_tokens=self.run.online.max_new_tokens,
                   temperature=self.run.online.temperature, eos_id=self.config.eos_token_id,
                   pad_id=self.prompt_rows.pad_id)
    return prompts, np.asarray(out.tokens), np.asarray(out.response_mask)

  def _gold(self, prompts, tokens, masks):
    k = self.run.online.samples_per_prompt
    return np.asarray(self.gold_reward(np.repeat(prompts.tokens, k, 0), tokens, masks,
                                       np.repeat(prompts.attention_mask, k, 0)))

  def _label(self, state, prompts, tokens, masks) -> np.ndarray:
    labeller = self.run.online.labeller
    if labeller == "gold":
      return self._gold(prompts, tokens, masks)
    k = self.run.online.samples_per_prompt
    sequence = np.concatenate([np.repeat(prompts.tokens, k, 0), tokens], axis=1)
    sequence_mask = np.concatenate([np.repeat(prompts.attention_mask, k, 0), masks], axis=1)
    if labeller == "reward_model":
      return np.asarray(reward_scores(self.rm_config, state.extras["rm_params"], sequence,
                                      sequence_mask))
    P = prompts.tokens.shape[1]  # implicit reward beta * log(pi / pi_ref) of the samples
    policy = response_logps(self.config, state.params, sequence, sequence_mask, P)
    ref = response_logps(self.config, state.ref_params, sequence, sequence_mask, P)
    return np.asarray(self.run.loss.beta * masked_sum(policy - ref, masks, axis=1))

  def _pairs(self, prompts, tokens, masks, scores):
    k = self.run.online.samples_per_prompt
    prompt_ids, chosen, rejected = [], [], []
    for row in range(prompts.tokens.shape[0]):
      prompt = prompts.tokens[row][prompts.attention_mask[row] > 0]
      responses = [tokens[row * k + j][masks[row * k + j] > 0] for j in range(k)]
      for c, r in _pair_indices(scores[row * k:(row + 1) * k], self.run.online.pairs):
        prompt_ids.append(prompt)
        chosen.append(responses[c])
        rejected.append(responses[r])
    if len(chosen) < self.run.data.batch_size:
      raise RuntimeError(f"only {len(chosen)} pairs from {prompts.tokens.shape[0]} prompts "
                         f"(ties are skipped); raise online.prompts_per_refresh")
    rows = D.PreferenceRows.from_token_lists(prompt_ids, chosen, rejected,
                                             self.prompt_rows.pad_id, self.config.eos_token_id)
    return rows, {"online/pairs": float(len(chosen)),
                  "online/label_mean": float(np.mean(scores)),
                  "online/ties_skipped": float(prompts.tokens.shape[0] * (
                      1 if self.run.online.pairs == "best_worst" else k * (k - 1) // 2)
                      - len(chosen))}

  def _refresh_reward_model(self, state, rng):
    """A few Bradley-Terry steps on gold-labelled pairs of the current policy's samples."""
    prompts, tokens, masks = self._sample(state.params, rng, self.run.online.rm_refresh_pairs)
    rows, _ = self._pairs(prompts, tokens, masks, self._gold(prompts, tokens, masks))
    params = state.extras["rm_params"]
    opt_state = self.rm_tx.init(params)
    batches = D.BatchIterator(rows, self.run.data.batch_size, seed=int(state.step))
    for _ in range(self.run.online.rm_refresh_steps):
      batch = next(batches)
      params, opt_state = self.rm_step(params, opt_state, batch_arrays(batch))
    return state.replace(extras=dict(state.extras, rm_params=params))


def _rm_step(config, tx):
  """A jitted Bradley-Terry step of the reward-model objective."""
  objective = RewardModelObjective(config)

  @jax.jit
  def step(params, opt_state, batch):
    loss_fn = lambda p: objective.loss(p, None, batch, objective.denominators(batch))[0]
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step
