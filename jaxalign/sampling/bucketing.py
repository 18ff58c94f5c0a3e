"""Shape bucketing, so a training loop that samples every step compiles a handful of times.

``generate`` compiles once per (batch, prompt length, budget). Prompts of varying length are
left-padded up to the next length bucket and the batch up to the next batch bucket; the
extra rows are dropped from the output.
"""

from __future__ import annotations

import numpy as np

from jaxalign.sampling.sampler import SampleOutput, generate


def next_bucket(n: int, buckets=None, multiple: int = 64) -> int:
  """The smallest bucket >= n: from ``buckets`` if given, else the next multiple."""
  if buckets:
    for b in sorted(buckets):
      if b >= n:
        return b
    raise ValueError(f"{n} exceeds the largest bucket {max(buckets)}")
  return -(-n // multiple) * multiple


def pad_prompts_to_bucket(prompt_tokens, prompt_mask, *, pad_id: int = 0, length_buckets=None,
                          length_multiple: int = 64, batch_buckets=None, batch_multiple: int = 1,
                          max_length: int | None = None):
  """Left-pads [B, P] prompts to [B', P'] buckets. Extra rows hold one real ``pad_id`` token
  (so every row is valid) and are meant to be dropped. Returns (tokens, mask, B)."""
  tokens, mask = np.asarray(prompt_tokens), np.asarray(prompt_mask)
  B, P = tokens.shape
  length = next_bucket(P, length_buckets, length_multiple)
  if max_length is not None:
    length = max(P, min(length, max_length))
  batch = next_bucket(B, batch_buckets, batch_multiple)
  out_tokens = np.full((batch, length), pad_id, tokens.dtype)
  out_mask = np.zeros((batch, length), mask.dtype)
  out_tokens[:B, length - P:] = tokens
  out_mask[:B, length - P:] = mask
  out_mask[B:, -1] = 1
  return out_tokens, out_mask, B


def generate_bucketed(config, params, prompt_tokens, prompt_mask, rng, *, max_new_tokens: int,
                      pad_id: int = 0, length_buckets=None, length_multiple: int = 64,
                      batch_buckets=None, batch_multiple: int = 1, **kwargs) -> SampleOutput:
  """``generate`` on bucketed shapes; returns outputs for the original rows only.

  The prompt columns of ``sequence`` (when requested) are the bucketed, left-padded ones.
  """
  tokens, mask, B = pad_prompts_to_bucket(
      prompt_tokens, prompt_mask, pad_id=pad_id, length_buckets=length_buckets,
      length_multiple=length_multiple, batch_buckets=batch_buckets,
      batch_multiple=batch_multiple, max_length=config.max_seq_len - max_new_tokens)
  out = generate(config, params, tokens, mask, rng, max_new_tokens=max_new_tokens,
                 pad_id=pad_id, **kwargs)
  return SampleOutput(*(None if x is None else x[:B] for x in (
      out.tokens, out.logprobs, out.tempered_logprobs, out.sampling_logprobs,
      out.response_mask, out.lengths, out.sequence, out.sequence_mask)))
