"""A reward model as a reward function: ``reward_model_reward(config, params)``.

The model is a ``(config, params)`` reward model (``jaxalign train rm``'s folder:
``jaxalign.training.setup.load_reward_model``, or ``jaxalign.models.load_model``). It scores
``prompt + completion`` ids laid out as the rollouts are (left-padded prompt, then the
completion up to its EOS, then padding), at the last real token
(``jaxalign.training.forward.reward_scores``): ``r_b = RM(x_b, y_b)``.

Jitted once per (batch bucket, length bucket): the batch is filled up to the next of
``batch_buckets`` with one-token rows (dropped afterwards) and the length right-padded to a
multiple of ``length_multiple``; batches over the largest bucket run in chunks of it.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxalign.models import RewardModel
from jaxalign.rewards.base import ids_reward
from jaxalign.sampling import next_bucket

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@functools.partial(jax.jit, static_argnames=("config",))
def _scores(config, params, tokens, mask):
  """``training.forward.reward_scores`` (not imported: the trainers import this package)."""
  return RewardModel(config).apply({"params": params}, tokens, mask)


def pad_for_scoring(tokens: np.ndarray, mask: np.ndarray, batch: int, length: int,
                    pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """[B, T] -> [batch, length]: columns right-padded (mask 0), extra rows one real pad token."""
  B, T = tokens.shape
  out_tokens = np.full((batch, length), pad_id, np.int32)
  out_mask = np.zeros((batch, length), np.int32)
  out_tokens[:B, :T], out_mask[:B, :T] = tokens, mask
  out_mask[B:, 0] = 1
  return out_tokens, out_mask


def reward_model_reward(config, params, *, batch_buckets=DEFAULT_BATCH_BUCKETS,
                        length_multiple: int = 16, pad_id: int = 0):
  """An ids reward function ``(prompts, completions, *, prompt_mask, completion_mask) ->
  RM scores float32 [B]`` (module docstring)."""
  buckets = tuple(sorted(batch_buckets))

  @ids_reward
  def fn(prompts, completions, *, prompt_mask, completion_mask, **_) -> np.ndarray:
    tokens = np.concatenate([np.asarray(prompts), np.asarray(completions)], axis=1)
    mask = np.concatenate([np.asarray(prompt_mask), np.asarray(completion_mask)], axis=1)
    B, T = tokens.shape
    if T > config.max_seq_len:
      raise ValueError(f"prompt + completion = {T} tokens, beyond the reward model's "
                       f"max_seq_len {config.max_seq_len}")
    length = min(next_bucket(T, multiple=length_multiple), config.max_seq_len)
    out = []
    for start in range(0, B, buckets[-1]):
      chunk = slice(start, min(start + buckets[-1], B))
      rows = chunk.stop - chunk.start
      padded = pad_for_scoring(tokens[chunk], mask[chunk], next_bucket(rows, buckets), length,
                               pad_id)
      out.append(np.asarray(_scores(config, params, *padded))[:rows])
    return np.concatenate(out).astype(np.float32)

  fn.__name__ = "reward_model"
  return fn
