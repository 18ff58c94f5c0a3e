"""Evaluating a policy: gold reward of its samples, KL to the reference, and how well
explicit (reward model) and implicit (beta * log pi / pi_ref) rewards rank held-out pairs."""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxalign.models import TransformerConfig
from jaxalign.sampling import generate
from jaxalign.ops import masked_sum
from jaxalign.training.forward import reward_scores
from jaxalign.training.rollout import response_logps


@functools.partial(jax.jit, static_argnames=("config",))
def _sequence_logps(config, params, sequence, sequence_mask, response_mask, temperature=1.0):
  """Summed log-probs [B] of the response columns of ``sequence`` under softmax(logits / T)."""
  P = sequence.shape[1] - response_mask.shape[1]
  return masked_sum(response_logps(config, params, sequence, sequence_mask, P, temperature),
                    response_mask, axis=1)


@functools.partial(jax.jit, static_argnames=("config",))
def sequence_scores(config, params, sequence, mask):
  """Reward-model scores ``[B]`` of whole sequences (jitted ``reward_scores``)."""
  return reward_scores(config, params, sequence, mask)


def score_samples(config: TransformerConfig, params, ref_params, prompt_tokens, prompt_mask,
                  rng, *, max_new_tokens: int, eos_id: int, pad_id: int = 0, gold_reward=None,
                  reward_model=None, temperature: float = 1.0,
                  batch_size: int = 128) -> dict[str, np.ndarray]:
  """One sample per prompt; per-sample ``[B]`` float64 arrays: ``kl`` (log pi_T - log
  pi_ref,T of the sample, both at the sampling temperature T: its mean is KL(pi_T ||
  pi_ref,T) in nats per sequence), ``entropy`` (-log pi_T of the sample: its mean is the
  policy's sequence entropy), ``length``, and ``gold_reward`` / ``rm_score`` when given.
  ``reward_model`` is ``(config, params)``; ``temperature`` must be > 0."""
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0 to estimate a KL from samples, got {temperature}")
  totals = {"kl": [], "entropy": [], "length": [], "gold_reward": [], "rm_score": []}
  for start in range(0, prompt_tokens.shape[0], batch_size):
    tokens = prompt_tokens[start:start + batch_size]
    mask = prompt_mask[start:start + batch_size]
    out = generate(config, params, tokens, mask, jax.random.fold_in(rng, start),
                   max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id,
                   pad_id=pad_id, return_sequence=True)
    policy_logps = _sequence_logps(config, params, out.sequence, out.sequence_mask,
                                   out.response_mask, temperature)
    ref_logps = _sequence_logps(config, ref_params, out.sequence, out.sequence_mask,
                                out.response_mask, temperature)
    totals["kl"].append(np.asarray(policy_logps - ref_logps))
    totals["entropy"].append(-np.asarray(policy_logps))
    totals["length"].append(np.asarray(out.lengths))
    if gold_reward is not None:
      totals["gold_reward"].append(np.asarray(gold_reward(
          tokens, out.tokens, out.response_mask, mask)))
    if reward_model is not None:
      rm_config, rm_params = reward_model
      totals["rm_score"].append(np.asarray(reward_scores(
          rm_config, rm_params, out.sequence, out.sequence_mask)))
  return {k: np.concatenate(v).astype(np.float64) for k, v in totals.items() if v}


def sample_and_score(config: TransformerConfig, params, ref_params, prompt_tokens,
                     prompt_mask, rng, *, max_new_tokens: int, eos_id: int, pad_id: int = 0,
                     gold_reward=None, reward_model=None, temperature: float = 1.0,
                     batch_size: int = 128) -> dict[str, float]:
  """The means of ``score_samples``: one response per prompt, its mean gold reward / RM
  score, the sequence-level KL to the reference (KL(pi_T || pi_ref,T), both sides at the
  sampling temperature T), the policy's sequence entropy estimate and the mean response
  length. ``temperature`` must be > 0."""
  values = score_samples(config, params, ref_params, prompt_tokens, prompt_mask, rng,
                         max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                         gold_reward=gold_reward, reward_model=reward_model,
                         temperature=temperature, batch_size=batch_size)
  return {k: float(v.mean()) for k, v in values.items()}
