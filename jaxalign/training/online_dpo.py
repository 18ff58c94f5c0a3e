"""Online / iterative DPO: the DPO-family trainer whose pairs are refreshed from the policy.

Every ``online.refresh_every`` policy steps: optionally retrain the reward model on
gold-labelled current samples (every ``online.rm_refresh_every`` refreshes: the
discriminator cadence of the GAN view), sample k responses per prompt from the current
policy, label them (reward model, gold reward, or the policy's own implicit reward against
the reference it was trained against), form pairs (best vs worst, or all pairs), then
update the reference (fixed, the previous iterate, or an EMA) and train on the pairs, with
any loss of the DPO family, against the updated reference. ``refresh_every = inf`` never
refreshes: the run is the offline DPO trainer, step for step.
"""

from __future__ import annotations

import functools
import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxalign import data as D
from jaxalign.config import RunConfig
from jaxalign.ops import masked_sum
from jaxalign.parallel import shard_global_batch, to_host
from jaxalign.parallel.mesh import batch_shards
from jaxalign.sampling import generate
from jaxalign.training.forward import reward_scores
from jaxalign.training.loop import StopEarly
from jaxalign.training.objectives import RewardModelObjective
from jaxalign.training.optim import make_optimizer
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.rollout import response_logps
from jaxalign.training.setup import batch_arrays


def is_offline(run: RunConfig) -> bool:
  return math.isinf(run.online.refresh_every)


def rm_refreshes(run: RunConfig) -> bool:
  """Whether the run retrains its reward model (and keeps an RM optimizer state)."""
  return not is_offline(run) and run.online.rm_refresh_every > 0


def check_online_config(run: RunConfig) -> None:
  """Rejects an online-DPO config that cannot run, before any data is built (ValueError
  naming the keys), instead of failing at the first refresh."""
  online = run.online
  if online.samples_per_prompt < 2:
    raise ValueError(f"online.samples_per_prompt must be >= 2, got {online.samples_per_prompt}")
  if is_offline(run):
    return
  _check_cadence(run)
  _check_sampling(run)
  _check_labeller(run)
  _check_reference(run)
  _check_rm_refresh(run)


def _check_cadence(run: RunConfig) -> None:
  every = run.online.refresh_every
  if every < 1 or every != int(every):
    raise ValueError(f"online.refresh_every must be a positive integer or inf, got {every}")
  if run.loop.checkpoint_every and run.loop.checkpoint_every % int(every):
    raise ValueError(f"loop.checkpoint_every={run.loop.checkpoint_every} must be a multiple of "
                     f"online.refresh_every={int(every)} (a resumed run regenerates its pairs "
                     f"at the checkpointed refresh)")


def max_pairs_per_prompt(run: RunConfig) -> int:
  k = run.online.samples_per_prompt
  return 1 if run.online.pairs == "best_worst" else k * (k - 1) // 2


def _check_sampling(run: RunConfig) -> None:
  online = run.online
  if not online.temperature > 0 or math.isinf(online.temperature):
    raise ValueError(f"online.temperature must be a positive finite number, got "
                     f"{online.temperature} (at 0 every sample of a prompt is the same "
                     f"response, so every pair is a tie)")
  if online.top_k < 0 or not 0 < online.top_p <= 1:
    raise ValueError(f"online.top_k must be >= 0 and online.top_p in (0, 1], got "
                     f"{online.top_k} and {online.top_p}")
  _check_enough_pairs(run, "online.prompts_per_refresh", online.prompts_per_refresh)


def _check_enough_pairs(run: RunConfig, key: str, prompts: int) -> None:
  most = prompts * max_pairs_per_prompt(run)
  if most < run.data.batch_size:
    raise ValueError(f"{key}={prompts} gives at most {most} pairs (online.pairs="
                     f"{run.online.pairs}, online.samples_per_prompt="
                     f"{run.online.samples_per_prompt}), fewer than one batch of "
                     f"data.batch_size={run.data.batch_size}: raise {key}")


def _needs_reference(run: RunConfig) -> bool:
  return preference_loss(run.loss.name, **run.loss.knobs()).needs_reference  # reference_free


def _same_path(a: str, b: str) -> bool:
  if "://" in a or "://" in b:
    return a.rstrip("/") == b.rstrip("/")
  return os.path.realpath(a) == os.path.realpath(b)


def _check_labeller(run: RunConfig) -> None:
  online, model = run.online, run.model
  if online.labeller == "reward_model" and not online.reward_model:
    raise ValueError("online.labeller=reward_model needs online.reward_model")
  if online.labeller == "gold" and run.data.source != "synthetic":
    raise ValueError(f"online.labeller=gold needs data.source=synthetic (the gold reward is "
                     f"the synthetic task's), got data.source={run.data.source}")
  if online.labeller != "implicit":
    return
  if not _needs_reference(run):
    raise ValueError(f"online.labeller=implicit labels with beta log(pi / pi_ref), but "
                     f"loss.name={run.loss.name} is reference-free: use a loss with a "
                     f"reference (dpo, ipo, ...) or another online.labeller")
  if not model.reference_from:
    raise ValueError("online.labeller=implicit needs model.reference_from (e.g. the SFT "
                     "model, with model.init_from a DPO model): the default reference is a "
                     "copy of the start policy, so every implicit reward would be 0 (a tie)")
  if model.init_from and _same_path(model.reference_from, model.init_from):
    raise ValueError(f"online.labeller=implicit needs model.reference_from to differ from "
                     f"model.init_from (both are {model.init_from}): every implicit reward "
                     f"would be 0 (a tie)")


def _check_reference(run: RunConfig) -> None:
  online = run.online
  if online.reference != "fixed" and not _needs_reference(run):
    raise ValueError(f"online.reference={online.reference} moves a reference, but "
                     f"loss.name={run.loss.name} is reference-free: use online.reference=fixed")
  if online.reference == "ema" and not 0 < online.reference_ema <= 1:
    raise ValueError(f"online.reference_ema must be in (0, 1], got {online.reference_ema}")


def _check_rm_refresh(run: RunConfig) -> None:
  online = run.online
  if online.rm_refresh_every < 0:
    raise ValueError(f"online.rm_refresh_every must be >= 0, got {online.rm_refresh_every}")
  if not online.rm_refresh_every:
    return
  if not online.reward_model:
    raise ValueError("online.rm_refresh_every > 0 retrains online.reward_model: set it")
  if online.labeller != "reward_model":
    raise ValueError(f"online.rm_refresh_every > 0 retrains the reward model that labels the "
                     f"pairs, but online.labeller={online.labeller}: set "
                     f"online.labeller=reward_model or online.rm_refresh_every=0")
  if run.data.source != "synthetic":
    raise ValueError("online.rm_refresh_every > 0 retrains the reward model on gold labels: "
                     f"it needs data.source=synthetic, got data.source={run.data.source}")
  if online.rm_refresh_steps < 1:
    raise ValueError(f"online.rm_refresh_steps must be >= 1, got {online.rm_refresh_steps}")
  _check_enough_pairs(run, "online.rm_refresh_prompts", online.rm_refresh_prompts)


def online_reference(run: RunConfig, ref_params):
  """The reference a refreshing run keeps in its state. An EMA reference is float32 from the
  start (in bf16, ``(1 - a) ref + a policy`` rounds moves of a = 0.001 away; float32 from the
  start keeps the checkpoint's structure the same before and after the first update)."""
  if is_offline(run) or run.online.reference != "ema":
    return ref_params
  return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), ref_params)


def reward_model_extras(run: RunConfig, rm_params) -> dict:
  """``TrainState.extras`` of a run with a reward model: its params and, when it is
  retrained, its optimizer state (kept across refreshes, saved in the checkpoint)."""
  extras = {"rm_params": rm_params}
  if rm_refreshes(run):
    extras["rm_opt_state"] = make_optimizer(run.online.rm_optimizer).init(rm_params)
  return extras


def _keep_layout(new, old):
  """``new`` placed with the shardings of ``old`` (the layout the train step compiled for)."""
  return jax.device_put(new, jax.tree_util.tree_map(lambda x: x.sharding, old))


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
  """The ``before_step`` hook of ``fit`` that keeps the pairs on-policy.

  A refresh (every ``online.refresh_every`` steps) runs, in this order: the reward-model
  refresh when due, ``_sample``, ``_label`` (the implicit reward against the reference the
  policy was trained against, i.e. before this refresh's update), ``_pairs``, the reference
  update, and the new pairs' batches (cached reference log-probs from the updated reference,
  the one the next steps train against).

  Multi-host: every process holds the same prompts; the rows a process's devices own are
  placed on the mesh (``shard_global_batch``), so sampling and scoring run once over the
  global batch; samples and scores are gathered to every host (``to_host``), so every
  process forms the same pairs and then feeds its own slice of each training batch.
  """

  def __init__(self, run: RunConfig, config, objective, prompt_rows, batches: SwappableBatches,
               make_rows, rm=None, gold_reward=None, mesh=None):
    self.run, self.config, self.objective = run, config, objective
    self.prompt_rows, self.batches, self.make_rows = prompt_rows, batches, make_rows
    self.mesh = mesh
    self.rm_config = rm[0] if rm else None
    self.gold_reward = gold_reward
    self.every = int(run.online.refresh_every)
    self.rm_tx = make_optimizer(run.online.rm_optimizer)
    self.rm_step = _rm_step(self.rm_config, self.rm_tx) if rm and rm_refreshes(run) else None

  def __call__(self, state, step: int):
    if step % self.every:
      return state, {}
    online = self.run.online
    iteration = step // self.every
    rng = np.asarray(jax.random.fold_in(jax.random.fold_in(to_host(state.rng), step), 7))
    metrics = {"online/iteration": float(iteration)}
    if iteration > 0 and online.rm_refresh_every and iteration % online.rm_refresh_every == 0:
      state, rm_metrics = self._refresh_reward_model(state, jax.random.fold_in(rng, 1), metrics)
      metrics.update(rm_metrics)
    prompts, tokens, masks = self._sample(state.policy(None), jax.random.fold_in(rng, 2),
                                          online.prompts_per_refresh)
    gold = None if self.gold_reward is None else self._gold(prompts, tokens, masks)
    scores = self._label(state, prompts, tokens, masks, gold)  # before the reference moves
    rows, counts = self._pairs(prompts, tokens, masks, scores, gold)
    metrics.update({f"online/{k}": v for k, v in counts.items()})
    if gold is not None:
      metrics["online/gold_reward"] = float(np.mean(gold))
    self._require_batch(counts, step, "online.prompts_per_refresh", metrics)
    if iteration > 0:
      state = self._update_reference(state)
    self.batches.batches = D.BatchIterator(self.make_rows(rows, state), self.run.data.batch_size,
                                           seed=self.run.seed + step,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count())
    return state, metrics

  def _update_reference(self, state):
    mode = self.run.online.reference
    if mode == "previous_iterate":
      return state.replace(ref_params=_copy(state.params))
    if mode == "ema":  # ref_params are float32 (online_reference): small moves survive
      return state.replace(ref_params=_ema(state.ref_params, state.params,
                                           jnp.float32(self.run.online.reference_ema)))
    return state

  def _rows_on_mesh(self, *arrays):
    """Host arrays [n, ...] (the same on every process) as global arrays on the mesh, rows
    padded up to a multiple of the mesh's batch shards by repeating row 0; and ``n``."""
    n = arrays[0].shape[0]
    if self.mesh is None:
      return arrays, n
    shards = batch_shards(self.mesh)
    pad = -n % shards
    arrays = tuple(np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) if pad else a
                   for a in arrays)
    return shard_global_batch(arrays, self.mesh), n

  def _sample(self, params, rng, num_prompts: int):
    """k responses for each of ``num_prompts`` prompts: (prompt batch, tokens, masks)."""
    k = self.run.online.samples_per_prompt
    order = np.asarray(jax.random.permutation(jax.random.fold_in(rng, 0), len(self.prompt_rows)))
    prompts = self.prompt_rows.batch(order[:num_prompts], self.prompt_rows.max_length)
    (tokens, mask), n = self._rows_on_mesh(np.repeat(prompts.tokens, k, axis=0),
                                           np.repeat(prompts.attention_mask, k, axis=0))
    out = generate(self.config, params, tokens, mask, jax.random.fold_in(rng, 1),
                   max_new_tokens=self.run.online.max_new_tokens,
                   temperature=self.run.online.temperature, top_k=self.run.online.top_k,
                   top_p=self.run.online.top_p, eos_id=self.config.eos_token_id,
                   pad_id=self.prompt_rows.pad_id)
    tokens, masks = to_host((out.tokens, out.response_mask))
    return prompts, tokens[:n], masks[:n]

  def _gold(self, prompts, tokens, masks):
    k = self.run.online.samples_per_prompt
    return np.asarray(self.gold_reward(np.repeat(prompts.tokens, k, 0), tokens, masks,
                                       np.repeat(prompts.attention_mask, k, 0)))

  def _label(self, state, prompts, tokens, masks, gold) -> np.ndarray:
    """One score per sample: the reward model's, the gold reward (``gold``, already computed
    for the metrics), or the implicit reward beta * log(pi / pi_ref) against
    ``state.ref_params`` (the reference before the update)."""
    labeller = self.run.online.labeller
    if labeller == "gold":
      return gold
    k = self.run.online.samples_per_prompt
    sequence = np.concatenate([np.repeat(prompts.tokens, k, 0), tokens], axis=1)
    sequence_mask = np.concatenate([np.repeat(prompts.attention_mask, k, 0), masks], axis=1)
    (sequence, sequence_mask, response_mask), n = self._rows_on_mesh(sequence, sequence_mask,
                                                                     masks)
    if labeller == "reward_model":
      scores = _reward_scores(self.rm_config, state.extras["rm_params"], sequence,
                              sequence_mask)
    else:
      scores = self.run.loss.beta * _implicit_logratios(self.config, state.policy(None),
                                                        state.reference(),
                                                        sequence, sequence_mask, response_mask)
    return to_host(scores)[:n]

  def _pairs(self, prompts, tokens, masks, scores, gold=None):
    """(rows, counts): the preference rows of each prompt's samples and how many pairs were
    formed (``pairs``), skipped as ties (``ties_skipped``), and the mean label. With ``gold``
    (the gold reward of each sample, synthetic data) also ``gold_agreement``: the fraction of
    pairs whose chosen response has the higher gold reward, a gold tie counting one half."""
    k = self.run.online.samples_per_prompt
    prompt_ids, chosen, rejected, agreement = [], [], [], []
    for row in range(prompts.tokens.shape[0]):
      prompt = prompts.tokens[row][prompts.attention_mask[row] > 0]
      responses = [tokens[row * k + j][masks[row * k + j] > 0] for j in range(k)]
      for c, r in _pair_indices(scores[row * k:(row + 1) * k], self.run.online.pairs):
        prompt_ids.append(prompt)
        chosen.append(responses[c])
        rejected.append(responses[r])
        if gold is not None:
          agreement.append(0.5 + 0.5 * np.sign(gold[row * k + c] - gold[row * k + r]))
    possible = prompts.tokens.shape[0] * max_pairs_per_prompt(self.run)
    counts = {"pairs": float(len(chosen)), "ties_skipped": float(possible - len(chosen)),
              "label_mean": float(np.mean(scores))}
    if agreement:
      counts["gold_agreement"] = float(np.mean(agreement))
    if not chosen:
      return None, counts
    rows = D.PreferenceRows.from_token_lists(prompt_ids, chosen, rejected,
                                             self.prompt_rows.pad_id, self.config.eos_token_id)
    return rows, counts

  def _require_batch(self, counts, step: int, key: str, metrics: dict) -> None:
    """At least one batch of pairs, else (``online.on_few_pairs``) an error naming ``key``
    or ``StopEarly`` with ``metrics`` (policy and reward-model refreshes alike)."""
    if counts["pairs"] >= self.run.data.batch_size:
      return
    few = (f"only {int(counts['pairs'])} pairs ({int(counts['ties_skipped'])} ties skipped), "
           f"fewer than one batch of data.batch_size={self.run.data.batch_size}")
    if self.run.online.on_few_pairs == "stop":
      raise StopEarly(f"{few} ({key}; online.on_few_pairs=stop)",
                      dict(metrics, **{"online/stopped_early": 1.0}))
    raise RuntimeError(f"step {step}: {few}: raise {key} (or set online.on_few_pairs=stop "
                       f"to end the run there)")

  def _refresh_reward_model(self, state, rng, metrics: dict):
    """``online.rm_refresh_steps`` Bradley-Terry steps on gold-labelled pairs of the current
    policy's samples; the optimizer state carries over from refresh to refresh. Too few
    pairs: as a policy refresh (``online.on_few_pairs``; ``metrics`` are the refresh's)."""
    online = self.run.online
    prompts, tokens, masks = self._sample(state.policy(None), rng, online.rm_refresh_prompts)
    rows, counts = self._pairs(prompts, tokens, masks, self._gold(prompts, tokens, masks))
    step = int(to_host(state.step))
    self._require_batch(counts, step, "online.rm_refresh_prompts", dict(
        metrics, **{"online/rm_refresh_pairs": counts["pairs"],
                    "online/rm_refresh_ties_skipped": counts["ties_skipped"]}))
    params, opt_state = state.extras["rm_params"], state.extras["rm_opt_state"]
    # Every process holds each whole batch; each places the rows its devices own.
    batches = D.BatchIterator(rows, self.run.data.batch_size, seed=step)
    losses, accuracies = [], []
    for _ in range(online.rm_refresh_steps):
      batch = batch_arrays(next(batches))
      if self.mesh is not None:
        batch = shard_global_batch(batch, self.mesh)
      params, opt_state, loss, accuracy = self.rm_step(params, opt_state, batch)
      losses.append(loss)
      accuracies.append(accuracy)
    extras = dict(state.extras, rm_params=params, rm_opt_state=opt_state)
    metrics = {"online/rm_refresh_pairs": counts["pairs"],
               "online/rm_refresh_ties_skipped": counts["ties_skipped"],
               "online/rm_loss": float(np.mean(to_host(losses))),
               "online/rm_accuracy": float(np.mean(to_host(accuracies)))}
    return state.replace(extras=_keep_layout(extras, state.extras)), metrics


@jax.jit
def _copy(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


@jax.jit
def _ema(ref_params, params, rate):
  """``r + a (p - r)`` in the reference's dtype (float32 for an EMA reference)."""
  return jax.tree_util.tree_map(lambda r, p: r + rate * (p.astype(r.dtype) - r), ref_params,
                                params)


@functools.partial(jax.jit, static_argnames=("config",))
def _reward_scores(config, params, sequence, sequence_mask):
  return reward_scores(config, params, sequence, sequence_mask)  # [B]


@functools.partial(jax.jit, static_argnames=("config",))
def _implicit_logratios(config, params, ref_params, sequence, sequence_mask, response_mask):
  """Summed ``log pi(y|x) - log pi_ref(y|x)`` [B] of the response columns."""
  P = sequence.shape[1] - response_mask.shape[1]
  policy = response_logps(config, params, sequence, sequence_mask, P)
  ref = response_logps(config, ref_params, sequence, sequence_mask, P)
  return masked_sum(policy - ref, response_mask, axis=1)


def _rm_step(config, tx):
  """A jitted Bradley-Terry step of the reward-model objective: (params, opt_state, loss,
  accuracy) of the batch before the update."""
  objective = RewardModelObjective(config)

  @jax.jit
  def step(params, opt_state, batch):
    loss_fn = lambda p: objective.loss(p, None, batch, objective.denominators(batch))
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, metrics["accuracy"]
  return step
