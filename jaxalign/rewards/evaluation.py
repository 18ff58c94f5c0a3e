"""Pass@1 (greedy) and pass@k (k samples at temperature T) of a policy on prompts with gold
answers (``D.AnswerPromptRows``, e.g. the verifiable task's held-out prompts).

``greedy_pass_at_1``: the share of prompts whose greedy completion is exactly correct
(``D.check_answers``: the answer's tokens, then EOS).

``pass_at_k``: ``n >= k`` samples per prompt (one prefill each: ``generate(num_samples=n)``),
``c`` of them correct; per prompt the unbiased estimator of Chen et al. 2021 (HumanEval,
arXiv 2107.03374, Eq. 1)

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over prompts (with ``n = k`` it is the share of prompts with at least one correct
sample). It also reports ``mean_correct``, the mean of ``c / n``: the sampled pass@1 at T.

Batches have one shape (the last is filled up by repeating its rows, which are then
dropped), so the sampler compiles once per call site.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxalign.data.verifiable_task import check_answers
from jaxalign.sampling import generate


def pass_at_k_estimate(num_samples: int, num_correct, k: int) -> np.ndarray:
  """``1 - C(n - c, k) / C(n, k)`` per prompt (``num_correct`` [N] ints, ``n >= k``)."""
  n = int(num_samples)
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= num_samples, got k={k}, num_samples={n}")
  c = np.asarray(num_correct, np.int64)
  if np.any((c < 0) | (c > n)):
    raise ValueError(f"num_correct must be in [0, num_samples={n}], got {c}")
  return np.array([1.0 if n - ci < k else 1.0 - math.comb(n - ci, k) / math.comb(n, k)
                   for ci in c], np.float64)


def _batches(rows, batch_size: int):
  """(real rows, fixed-shape batch) over ``rows``: prompts at the rows' budget."""
  count = len(rows)
  size = min(batch_size, count)
  for start in range(0, count, size):
    real = np.arange(start, min(start + size, count))
    yield real, rows.batch(np.resize(real, size), rows.max_length)


def completion_correct(config, params, rows, rng, *, num_samples: int, temperature: float,
                       max_new_tokens: int, eos_id: int, pad_id: int = 0, top_k: int = 0,
                       top_p: float = 1.0, batch_size: int = 64) -> np.ndarray:
  """Correctness bool [N, num_samples] of samples of the policy on every row of ``rows``
  (an ``AnswerPromptRows``; temperature 0: greedy, then every sample is the same)."""
  if not len(rows):
    raise ValueError("no prompts to evaluate: rows is empty")
  out = []
  for real, batch in _batches(rows, batch_size):
    sample = generate(config, params, batch.tokens, batch.attention_mask,
                      jax.random.fold_in(rng, int(real[0])), max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id,
                      pad_id=pad_id, num_samples=num_samples)
    answers = np.repeat(np.asarray(batch.answer_tokens), num_samples, axis=0)
    answer_mask = np.repeat(np.asarray(batch.answer_mask), num_samples, axis=0)
    correct = check_answers(np.asarray(sample.tokens), np.asarray(sample.response_mask),
                            answers, answer_mask, eos_id)
    out.append(correct.reshape(-1, num_samples)[:len(real)])
  return np.concatenate(out)


def greedy_pass_at_1(config, params, rows, *, max_new_tokens: int, eos_id: int,
                     pad_id: int = 0, batch_size: int = 64) -> float:
  """The share of ``rows`` whose greedy completion is exactly the gold answer then EOS."""
  correct = completion_correct(config, params, rows, jax.random.key(0), num_samples=1,
                               temperature=0.0, max_new_tokens=max_new_tokens, eos_id=eos_id,
                               pad_id=pad_id, batch_size=batch_size)
  return float(correct.mean())


def pass_at_k(config, params, rows, rng, *, k: int, num_samples: int | None = None,
              temperature: float = 1.0, max_new_tokens: int, eos_id: int, pad_id: int = 0,
              top_k: int = 0, top_p: float = 1.0, batch_size: int = 64) -> dict[str, float]:
  """``{"pass@k": ..., "mean_correct": ...}`` (keys spelled with the number, e.g.
  ``pass@8``) from ``num_samples`` (default ``k``) samples per prompt at ``temperature``."""
  if not temperature > 0:
    raise ValueError(f"pass@k samples at a temperature > 0, got {temperature} (greedy: "
                     "greedy_pass_at_1)")
  n = num_samples or k
  correct = completion_correct(config, params, rows, rng, num_samples=n,
                               temperature=temperature, max_new_tokens=max_new_tokens,
                               eos_id=eos_id, pad_id=pad_id, top_k=top_k, top_p=top_p,
                               batch_size=max(1, batch_size // n))
  counts = correct.sum(axis=1)
  return {f"pass@{k}": float(pass_at_k_estimate(n, counts, k).mean()),
          "mean_correct": float(correct.mean())}


def evaluate_pass(config, params, rows, rng, *, k: int = 8, temperature: float = 1.0,
                  max_new_tokens: int, eos_id: int, pad_id: int = 0,
                  batch_size: int = 64) -> dict[str, float]:
  """Greedy ``pass@1`` and ``pass@k`` at ``temperature`` (plus ``mean_correct``), the
  metrics a trainer logs as ``eval/pass@1`` and ``eval/pass@k``."""
  out = {"pass@1": greedy_pass_at_1(config, params, rows, max_new_tokens=max_new_tokens,
                                    eos_id=eos_id, pad_id=pad_id, batch_size=batch_size)}
  out.update(pass_at_k(config, params, rows, rng, k=k, temperature=temperature,
                       max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                       batch_size=batch_size))
  return out
