"""What the toy reproductions share: Adam from the library, a ``lax.scan`` training loop, tiny
MLPs, the exact KL-regularised policy objective on a finite response set, confidence
intervals, and the results folder (``results/<name>/figure.png`` and ``numbers.json``).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from jaxalign.losses import kl_penalized_rewards, ppo_policy_loss
from jaxalign.training.optim import OptimizerConfig, make_optimizer

Params = list[tuple[jax.Array, jax.Array]]


def adam(learning_rate: float) -> optax.GradientTransformation:
  """The library's Adam, constant rate, no clipping (the papers' toy setting)."""
  return make_optimizer(OptimizerConfig(name="adam", learning_rate=learning_rate,
                                        grad_clip=None))


def fit(loss_fn: Callable, params, optimizer: optax.GradientTransformation, steps: int, *,
        key=None, record_fn: Callable | None = None, record_every: int | None = None):
  """``steps`` optimiser steps on ``loss_fn(params, key_t)``, ``key_t = fold_in(key, t)``.

  One ``lax.scan`` (two nested when recording): traceable under ``jit`` and ``vmap``. With
  ``record_fn``, ``record_fn(params)`` is stacked after every ``record_every`` steps.

  Returns:
    ``params`` or, when recording, ``(params, records)`` with a leading axis of
    ``steps // record_every``.
  """
  key = jax.random.key(0) if key is None else key
  if record_fn is not None and steps % record_every:
    raise ValueError(f"record_every={record_every} must divide steps={steps}")

  def step(carry, t):
    params, state = carry
    grads = jax.grad(loss_fn)(params, jax.random.fold_in(key, t))
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  def chunk(carry, start):
    carry, _ = jax.lax.scan(step, carry, start + jnp.arange(record_every))
    return carry, record_fn(carry[0])

  carry = (params, optimizer.init(params))
  if record_fn is None:
    return jax.lax.scan(step, carry, jnp.arange(steps))[0][0]
  starts = jnp.arange(steps // record_every) * record_every
  (params, _), records = jax.lax.scan(chunk, carry, starts)
  return params, records


def init_mlp(key, sizes: list[int], head_scale: float = 1.0) -> Params:
  """LeCun-normal weights ``N(0, 1 / fan_in)``, zero biases; the last layer times ``head_scale``."""
  keys = jax.random.split(key, len(sizes) - 1)
  params = []
  for index, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    scale = head_scale if index == len(sizes) - 2 else 1.0
    params.append((scale * jax.random.normal(k, (fan_in, fan_out)) / np.sqrt(fan_in),
                   jnp.zeros(fan_out)))
  return params


def mlp(params: Params, x: jax.Array, activation=jax.nn.relu) -> jax.Array:
  """``x [..., D] -> [..., K]``: dense layers with ``activation`` between them."""
  for weight, bias in params[:-1]:
    x = activation(x @ weight + bias)
  weight, bias = params[-1]
  return x @ weight + bias


def kl_regularized_policy_loss(logps, ref_logps, rewards, beta):
  """``-mean_x J(x)``, ``J(x) = E_{y~pi}[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x))``, exactly.

  On a finite response set the expectation is a sum, and by the score-function identity

    grad J = sum_y pi(y|x) A(x, y) grad log pi(y|x),   A = r - beta log(pi / pi_ref)

  (``sum_y pi grad log pi = 0`` removes the derivative of the log inside). That is the gradient
  of PPO's clipped surrogate at ratio 1 (Schulman et al. 2017, arXiv 1707.06347; one epoch
  per rollout) on KL-penalised rewards (Ziegler et al. 2019, arXiv 1909.08593) when every
  response is a "sample" weighted by ``pi``: so we build it from the library's
  ``kl_penalized_rewards`` and ``ppo_policy_loss`` with ``mask = stop_gradient(pi)``.

  Args:
    logps, ref_logps, rewards: ``[B, K]`` log pi, log pi_ref and r over all K responses.
    beta: the KL coefficient.

  Returns:
    ``(loss, metrics)``; the loss value is ``-mean_x J(x)``.
  """
  batch, responses = logps.shape
  flat = lambda x: x.reshape(batch * responses, 1)  # one-token "sequences"  # [B K, 1]
  penalised, _ = kl_penalized_rewards(flat(logps), flat(ref_logps), jnp.ones_like(flat(logps)),
                                      rewards.reshape(-1), beta)
  advantages = jax.lax.stop_gradient(penalised.reshape(batch, responses))  # [B, K]
  weights = jax.lax.stop_gradient(jnp.exp(logps))  # pi: the exact expectation
  return ppo_policy_loss(logps, jax.lax.stop_gradient(logps), advantages, weights,
                         denominator=batch)


def mean_interval(x, axis: int = 0, level: float = 0.95):
  """``(mean, half-width)``: Student-t interval of the mean over ``axis`` (seeds)."""
  x = np.asarray(x, np.float64)
  n = x.shape[axis]
  sem = x.std(axis=axis, ddof=1) / np.sqrt(n)
  return x.mean(axis=axis), scipy.stats.t.ppf(0.5 + level / 2, n - 1) * sem


def mean_sem(x, axis: int = 0):
  """``(mean, standard error)`` over ``axis``."""
  x = np.asarray(x, np.float64)
  return x.mean(axis=axis), x.std(axis=axis, ddof=1) / np.sqrt(x.shape[axis])


def seed_stat(values) -> dict:
  """``{"mean", "ci95", "seeds"}`` of one metric over seeds (``ci95`` NaN for one seed)."""
  values = np.asarray(values, np.float64)
  mean, half = mean_interval(values) if len(values) > 1 else (values.mean(), np.nan)
  return {"mean": float(mean), "ci95": float(half), "seeds": values.tolist()}


def run_seeds(config, seed_fn: Callable, summarise: Callable, plot: Callable,
              report: Callable) -> dict:
  """The LM experiments' driver: ``seed_fn(config, seed)`` for every seed (timed),
  ``summarise(config, per_seed)``, ``numbers.json`` and ``plot(summary, config)`` under
  ``config.output_dir``, ``report(numbers)`` printed; returns the numbers."""
  import dataclasses
  import time
  start = time.time()
  per_seed, timings = {}, {}
  for seed in config.seeds:
    begin = time.time()
    per_seed[seed] = seed_fn(config, seed)
    timings[seed] = time.time() - begin
  summary = summarise(config, per_seed)
  numbers = {"config": dataclasses.asdict(config), "summary": summary,
             "per_seed": {str(s): v for s, v in per_seed.items()},
             "seed_runtime_s": {str(s): t for s, t in timings.items()},
             "runtime_s": time.time() - start}
  numbers["output_dir"] = write_results(config.output_dir, numbers, plot(summary, config))
  print(report(numbers))
  return numbers


def replot(output_dir: str, config_cls, draw: Callable) -> None:
  """Redraws ``output_dir/figure.png`` from its ``numbers.json``: ``draw(numbers, config)``
  returns the figure, ``config`` rebuilt as ``config_cls`` (lists back to tuples)."""
  with open(os.path.join(output_dir, "numbers.json")) as f:
    numbers = json.load(f)
  config = config_cls(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in numbers["config"].items()})
  draw(numbers, config).savefig(os.path.join(output_dir, "figure.png"), dpi=120,
                                bbox_inches="tight")


def format_table(headers: list[str], rows: list[list]) -> str:
  """A fixed-width text table; floats with 3 decimals."""
  cell = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)
  cells = [headers] + [[cell(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def write_results(output_dir: str, numbers: dict, figure) -> str:
  """``output_dir/numbers.json`` and ``output_dir/figure.png``; returns the folder."""
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "numbers.json"), "w") as f:
    json.dump(numbers, f, indent=2, default=float)
  figure.savefig(os.path.join(output_dir, "figure.png"), dpi=120, bbox_inches="tight")
  return output_dir


def pyplot():
  """matplotlib's pyplot on the Agg backend (no display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def cli_main(doc: str, default_config, quick_config, run, argv=None,
             compilation_cache: bool = False):
  """The command line every experiment shares: ``--quick`` (the tests' reduced setting) and
  ``--output-dir``. ``compilation_cache``: JAX's persistent cache on, as ``jaxalign
  reproduce`` has it, down to small programs (the LM experiments' seeds reuse programs)."""
  import argparse
  import dataclasses
  if compilation_cache:
    from jaxalign.cli import runtime
    runtime.enable_compilation_cache()
    if not os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the reduced setting of the test")
  parser.add_argument("--output-dir", default=None)
  args = parser.parse_args(argv)
  config = quick_config if args.quick else default_config
  if args.output_dir:
    config = dataclasses.replace(config, output_dir=args.output_dir)
  return run(config)
