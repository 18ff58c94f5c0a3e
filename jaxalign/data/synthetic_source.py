"""A small synthetic language: a seeded first-order Markov chain over a tiny vocabulary.

Token ids: ``PAD_ID = 0``, ``EOS_ID = 1``, ``BOS_ID = 2`` are reserved; ids ``3 .. V-1`` are
content tokens. The chain's next-token logits given the current token are
``sharpness * N(0, 1)`` over content tokens, plus an EOS logit set so that the chain stops
with probability ``1 / mean_response_length`` per step at temperature 1. Pad and BOS are never
sampled. Sampling uses the Gumbel-max trick on a ``numpy.random.Generator``; the same seed
gives the same sequences.

Prompts: BOS, then a first content token from ``start_logits``, then chain steps with EOS
masked out; a ``bias`` [V] added to all prompt logits moves prompts to another region of the
language (prompt shift). Responses continue the chain from the prompt's last token until EOS
(masked for the first ``min_length`` tokens, so no response is empty); EOS is forced at the
last slot of the response budget, so every response ends in EOS.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
NUM_SPECIAL = 3
_NEG_INF = -np.inf


@dataclasses.dataclass(frozen=True)
class MarkovSource:
  """Next-token logits ``transition_logits`` [V, V] (row = current token) and the first
  prompt token's logits ``start_logits`` [V]; ``-inf`` where a token can never be sampled."""

  transition_logits: np.ndarray
  start_logits: np.ndarray

  @property
  def vocab_size(self) -> int:
    return self.start_logits.shape[0]


def make_markov_source(vocab_size: int = 64, seed: int = 0, sharpness: float = 2.0,
                       mean_response_length: float = 10.0) -> MarkovSource:
  """A random chain: higher ``sharpness`` = lower entropy (more predictable) text."""
  if vocab_size <= NUM_SPECIAL + 1:
    raise ValueError(f"vocab_size must exceed {NUM_SPECIAL + 1}, got {vocab_size}")
  rng = np.random.default_rng(seed)
  logits = sharpness * rng.standard_normal((vocab_size, vocab_size))  # [V, V]
  logits[:, :NUM_SPECIAL] = _NEG_INF
  content = logits[:, NUM_SPECIAL:]
  row_max = content.max(axis=1)
  log_mass = row_max + np.log(np.exp(content - row_max[:, None]).sum(axis=1))  # [V]
  stop = 1.0 / mean_response_length
  logits[:, EOS_ID] = log_mass + np.log(stop / (1.0 - stop))
  start = sharpness * rng.standard_normal(vocab_size)  # [V]
  start[:NUM_SPECIAL] = _NEG_INF
  return MarkovSource(transition_logits=logits, start_logits=start)


def _sample(logits: np.ndarray, rng: np.random.Generator, temperature: float) -> np.ndarray:
  """One categorical draw per row of ``logits`` [N, V] at ``temperature`` (0 = greedy)."""
  if temperature == 0:
    return logits.argmax(axis=1)
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  return (logits / temperature + rng.gumbel(size=logits.shape)).argmax(axis=1)


def sample_prompts(source: MarkovSource, rng: np.random.Generator, num: int,
                   min_length: int, max_length: int, bias: np.ndarray | None = None,
                   temperature: float = 1.0) -> list[np.ndarray]:
  """``num`` prompts: BOS + ``min_length..max_length`` content tokens (lengths uniform)."""
  bias = np.zeros(source.vocab_size) if bias is None else np.asarray(bias, np.float64)
  lengths = rng.integers(min_length, max_length + 1, size=num)  # [N]
  tokens = np.zeros((num, max_length), np.int32)  # [N, L]
  start = np.broadcast_to(source.start_logits + bias, (num, source.vocab_size))
  tokens[:, 0] = _sample(start, rng, temperature)
  no_eos = np.zeros(source.vocab_size)
  no_eos[EOS_ID] = _NEG_INF
  for step in range(1, max_length):
    step_logits = source.transition_logits[tokens[:, step - 1]] + bias + no_eos  # [N, V]
    tokens[:, step] = _sample(step_logits, rng, temperature)
  return [np.concatenate([[BOS_ID], row[:length]]).astype(np.int32)
          for row, length in zip(tokens, lengths)]


def sample_responses(transition_logits: np.ndarray, prompts: list[np.ndarray],
                     rng: np.random.Generator, max_length: int, temperature: float = 1.0,
                     min_length: int = 1) -> list[np.ndarray]:
  """One response per prompt, continuing the chain from its last token; ends in EOS.

  At least ``min_length`` content tokens (EOS masked before), at most ``max_length`` tokens
  including EOS (EOS is forced at the last slot).
  """
  num = len(prompts)
  current = np.array([prompt[-1] for prompt in prompts], np.int32)  # [N]
  tokens = np.zeros((num, max_length), np.int32)  # [N, L]
  no_eos = np.zeros(transition_logits.shape[1])
  no_eos[EOS_ID] = _NEG_INF
  for step in range(max_length - 1):
    step_logits = transition_logits[current] + (no_eos if step < min_length else 0.0)
    tokens[:, step] = current = _sample(step_logits, rng, temperature)
  tokens[:, max_length - 1] = EOS_ID
  ends = (tokens == EOS_ID).argmax(axis=1)  # [N] first EOS
  return [row[:end + 1].copy() for row, end in zip(tokens, ends)]


def token_histogram(sequences: list[np.ndarray], vocab_size: int) -> np.ndarray:
  """Frequencies [V] of content tokens over ``sequences`` (for checking distribution shift)."""
  counts = np.zeros(vocab_size)
  for sequence in sequences:
    content = sequence[sequence >= NUM_SPECIAL]
    counts += np.bincount(content, minlength=vocab_size)
  return counts / max(counts.sum(), 1)
