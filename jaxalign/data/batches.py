"""Typed batches of numpy arrays, padding from lengths, and length buckets.

Layouts (see docs/data.md and docs/conventions.md):

- Training rows (:class:`SFTBatch`, :class:`PreferenceBatch`, :class:`UnpairedBatch`) are
  RIGHT-padded:
  ``tokens[b] = prompt + response (ending in EOS) + pad``. ``attention_mask`` is 1 on prompt and
  response tokens, ``loss_mask`` is 1 on response tokens only (EOS included). Both come from
  the row's lengths, never from comparing tokens with ``pad_id``.
- Generation prompts (:class:`PromptBatch`) are LEFT-padded: ``tokens[b] = pad + prompt``.
- ``T`` (or ``P``) is a bucket length (:func:`bucket_length`), so ``jit`` sees few shapes.

The classes are ``flax.struct`` dataclasses (pytrees), so ``jax.device_put`` and sharding
work on a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import numpy as np


@flax.struct.dataclass
class SFTBatch:
  """Right-padded prompt + response rows.

  tokens [B, T] int32; attention_mask [B, T] int32 (prompt and response);
  loss_mask [B, T] int32 (response incl. EOS); truncated [B] bool (response cut, no EOS).
  """

  tokens: np.ndarray
  attention_mask: np.ndarray
  loss_mask: np.ndarray
  truncated: np.ndarray


@flax.struct.dataclass
class PreferenceBatch:
  """Right-padded chosen and rejected rows sharing one length T (same prompt in row b).

  {chosen,rejected}_tokens [B, T] int32; {chosen,rejected}_attention_mask [B, T] int32;
  {chosen,rejected}_loss_mask [B, T] int32 (response incl. EOS);
  weights [B] float32 (1 unless the file gave one); scores [B] float32 (the file's score or
  score_chosen - score_rejected, 0 where none); {chosen,rejected}_truncated [B] bool.
  """

  chosen_tokens: np.ndarray
  chosen_attention_mask: np.ndarray
  chosen_loss_mask: np.ndarray
  rejected_tokens: np.ndarray
  rejected_attention_mask: np.ndarray
  rejected_loss_mask: np.ndarray
  weights: np.ndarray
  scores: np.ndarray
  chosen_truncated: np.ndarray
  rejected_truncated: np.ndarray


@flax.struct.dataclass
class UnpairedBatch:
  """Right-padded unpaired (KTO) rows: one completion per prompt, desirable or not.

  tokens, attention_mask, loss_mask [B, T] int32 (as :class:`SFTBatch`); desirable [B] bool
  (the row's ``label``); weights [B] float32; truncated [B] bool.
  """

  tokens: np.ndarray
  attention_mask: np.ndarray
  loss_mask: np.ndarray
  desirable: np.ndarray
  weights: np.ndarray
  truncated: np.ndarray


@flax.struct.dataclass
class PromptBatch:
  """Left-padded prompts for generation.

  tokens [B, P] int32; attention_mask [B, P] int32; truncated [B] bool (prompt cut from the
  left to fit).
  """

  tokens: np.ndarray
  attention_mask: np.ndarray
  truncated: np.ndarray


def default_buckets(max_length: int, smallest: int = 16) -> tuple[int, ...]:
  """Powers of two from ``smallest`` below ``max_length``, then ``max_length`` itself."""
  buckets, size = [], smallest
  while size < max_length:
    buckets.append(size)
    size *= 2
  return tuple(buckets) + (max_length,)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= ``length``; an error if none is (rows never exceed the budget)."""
  fitting = [bucket for bucket in buckets if bucket >= length]
  if not fitting:
    raise ValueError(f"length {length} exceeds the largest bucket {max(buckets)}")
  return min(fitting)


def right_pad(prompts: Sequence[np.ndarray], responses: Sequence[np.ndarray], length: int,
              pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(tokens, attention_mask, loss_mask)`` each [B, length] from per-row id arrays."""
  batch_size = len(prompts)
  tokens = np.full((batch_size, length), pad_id, np.int32)  # [B, T]
  attention_mask = np.zeros((batch_size, length), np.int32)  # [B, T]
  loss_mask = np.zeros((batch_size, length), np.int32)  # [B, T]
  for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
    prompt_length, total = len(prompt), len(prompt) + len(response)
    if total > length:
      raise ValueError(f"row {row} has {total} tokens, more than the batch length {length}")
    tokens[row, :prompt_length] = prompt
    tokens[row, prompt_length:total] = response
    attention_mask[row, :total] = 1
    loss_mask[row, prompt_length:total] = 1
  return tokens, attention_mask, loss_mask


def left_pad(prompts: Sequence[np.ndarray], length: int,
             pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens, attention_mask)`` each [B, length], prompts flush right."""
  tokens = np.full((len(prompts), length), pad_id, np.int32)  # [B, P]
  attention_mask = np.zeros((len(prompts), length), np.int32)  # [B, P]
  for row, prompt in enumerate(prompts):
    if len(prompt) > length:
      raise ValueError(f"prompt {row} has {len(prompt)} tokens, more than {length}")
    if len(prompt):
      tokens[row, length - len(prompt):] = prompt
      attention_mask[row, length - len(prompt):] = 1
  return tokens, attention_mask
