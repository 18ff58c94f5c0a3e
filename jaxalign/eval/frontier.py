"""The reward-KL frontier: policies placed by reward against KL to one reference.

``frontier_table``: every policy sampled on the same prompts (one sample each, the same
key), with the mean and standard error over prompts of its gold reward (when the task has
one), reward-model score, sequence-level KL(pi || pi_ref), entropy and length, and whether
it lies on the upper concave hull of the table (``upper_frontier``): the best reward that
per-prompt mixtures of the listed policies attain at each KL. A mixture ``t pi_1 + (1 - t)
pi_2`` has reward ``t R_1 + (1 - t) R_2`` and, KL being convex, KL at most ``t KL_1 + (1 -
t) KL_2``, so every point of a chord between two policies is attainable.

``best_of_n``: the best-of-n policy against a reward model (n samples from the reference,
keep the highest-scoring one) for several n from one set of samples, with its KL in closed
form, ``best_of_n_kl(n) = log n - (n - 1) / n`` (Stiennon et al. 2020; exact when the n
scores are distinct, an upper bound otherwise: Beirami et al. 2024, arXiv 2401.01879).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign.eval.policy_eval import score_samples, sequence_scores
from jaxalign.sampling import generate

REFERENCE = "reference"
METRICS = ("gold_reward", "rm_score", "kl", "entropy", "length")


def _turn(a, b, c) -> float:
  """The cross product (b - a) x (c - a): > 0 when c lies left of (above) the line a -> b."""
  return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def upper_frontier(points) -> np.ndarray:
  """``[M, 2]`` (KL, reward) vertices of the upper concave hull of ``points``, by KL: the
  best reward mixtures of those policies attain at each KL (module docstring)."""
  hull = []
  for point in sorted(map(tuple, points)):
    while len(hull) >= 2 and _turn(hull[-2], hull[-1], point) >= 0:
      hull.pop()  # hull[-1] lies on or below the chord from hull[-2] to point
    hull.append(point)
  return np.asarray(hull, np.float64)


def frontier_at(points, kl: float) -> float:
  """The frontier of ``points`` at ``kl``, linear between vertices; NaN outside their KLs
  (never extrapolated)."""
  vertices = upper_frontier(points)
  if not vertices[0, 0] <= kl <= vertices[-1, 0]:
    return float("nan")
  return float(np.interp(kl, vertices[:, 0], vertices[:, 1]))


def best_of_n_kl(n) -> np.ndarray:
  """KL(best-of-n || reference) in nats: ``log n - (n - 1) / n`` (module docstring)."""
  n = np.asarray(n, np.float64)
  return np.log(n) - (n - 1.0) / n


def _summary(values: np.ndarray) -> tuple[float, float]:
  """(mean, standard error of the mean) of per-prompt values."""
  error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
  return float(values.mean()), float(error)


def _row(name: str, values: dict[str, np.ndarray]) -> dict:
  row = {"policy": name}
  for metric in METRICS:
    if metric in values:
      row[metric], row[f"{metric}_se"] = _summary(values[metric])
  return row


def mark_frontier(rows: list[dict], reward: str) -> list[dict]:
  """Sets ``on_frontier`` on each row: a vertex of the upper hull of (kl, ``reward``)."""
  vertices = {tuple(v) for v in upper_frontier([(r["kl"], r[reward]) for r in rows])}
  for row in rows:
    row["on_frontier"] = (row["kl"], row[reward]) in vertices
  return rows


def frontier_table(config, policies: dict, ref_params, prompt_tokens, prompt_mask, rng, *,
                   max_new_tokens: int, eos_id: int, pad_id: int = 0, gold_reward=None,
                   reward_model=None, temperature: float = 1.0,
                   batch_size: int = 128) -> list[dict]:
  """One row per policy (``policies``: name -> params, in order), the reference first (KL 0
  by construction): means and standard errors over prompts of ``METRICS`` (gold only with
  ``gold_reward``, RM score only with ``reward_model = (config, params)``), and
  ``on_frontier`` on the gold reward (else the RM score). Every policy is sampled with the
  same key on the same prompts."""
  if gold_reward is None and reward_model is None:
    raise ValueError("a frontier needs a reward: the task's gold reward or a reward model")
  kwargs = dict(max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                gold_reward=gold_reward, reward_model=reward_model, temperature=temperature,
                batch_size=batch_size)
  rows = []
  for name, params in [(REFERENCE, ref_params), *policies.items()]:
    values = score_samples(config, params, ref_params, prompt_tokens, prompt_mask, rng,
                           **kwargs)
    rows.append(_row(name, values))
  return mark_frontier(rows, "gold_reward" if gold_reward is not None else "rm_score")


def best_of_n(config, ref_params, prompt_tokens, prompt_mask, rng, reward_model, ns, *,
              max_new_tokens: int, eos_id: int, pad_id: int = 0, gold_reward=None,
              temperature: float = 1.0, batch_size: int = 16) -> list[dict]:
  """Best-of-n rows for each ``n`` in ``ns``: ``max(ns)`` samples per prompt from the
  reference (one prefill per prompt), the n-th row keeps the best RM score among the first
  n. Per row: ``n``, ``kl`` (``best_of_n_kl``), mean / standard error of ``rm_score``,
  ``gold_reward`` (with ``gold_reward``) and ``length``; ``samples_per_prompt = n``.
  ``batch_size`` counts prompts (each sampled ``max(ns)`` times)."""
  ns = sorted(int(n) for n in ns)
  if ns[0] < 1:
    raise ValueError(f"best-of-n needs n >= 1, got {ns}")
  group = ns[-1]
  rm_config, rm_params = reward_model
  columns = {"rm_score": [], "gold_reward": [], "length": []}
  for start in range(0, prompt_tokens.shape[0], batch_size):
    tokens = prompt_tokens[start:start + batch_size]
    mask = prompt_mask[start:start + batch_size]
    out = generate(config, ref_params, tokens, mask, jax.random.fold_in(rng, start),
                   max_new_tokens=max_new_tokens, temperature=temperature, eos_id=eos_id,
                   pad_id=pad_id, return_sequence=True, num_samples=group)
    shape = (tokens.shape[0], group)
    columns["rm_score"].append(np.asarray(sequence_scores(rm_config, rm_params, out.sequence,
                                                  out.sequence_mask)).reshape(shape))
    columns["length"].append(np.asarray(out.lengths).reshape(shape))
    if gold_reward is not None:
      repeated = lambda x: jnp.repeat(x, group, axis=0)  # prompt-major, as the samples
      columns["gold_reward"].append(np.asarray(gold_reward(
          repeated(tokens), out.tokens, out.response_mask, repeated(mask))).reshape(shape))
  values = {k: np.concatenate(v).astype(np.float64) for k, v in columns.items() if v}
  rows = []
  for n in ns:
    best = np.argmax(values["rm_score"][:, :n], axis=1)  # [B] the first maximum
    picked = {k: np.take_along_axis(v[:, :n], best[:, None], axis=1)[:, 0]
              for k, v in values.items()}
    row = {"policy": f"best-of-{n}", "n": n, "kl": float(best_of_n_kl(n)), "kl_se": 0.0,
           "samples_per_prompt": n}
    for metric, v in picked.items():
      row[metric], row[f"{metric}_se"] = _summary(v)
    rows.append(row)
  return rows


def format_frontier_table(rows: list[dict]) -> str:
  """A fixed-width text table of ``frontier_table`` rows (mean +- standard error)."""
  metrics = [m for m in METRICS if any(m in r for r in rows)]
  headers = ["policy", *metrics, "on frontier"]
  cell = lambda r, m: (f"{r[m]:.3f} +- {r[m + '_se']:.3f}" if m in r else "-")
  body = [[r["policy"], *[cell(r, m) for m in metrics],
           "yes" if r.get("on_frontier") else ""] for r in rows]
  widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
  lines = ["  ".join(str(x).rjust(w) for x, w in zip(line, widths)) for line in [headers, *body]]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)
